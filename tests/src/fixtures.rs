//! Bulk fixtures for benchmarks: fleets written straight into a store (faster than the API by
//! orders of magnitude), and the resident memory of a process.

use fleetmq_store::{
    Backend, ConfigFields, Device, DeviceFields, DeviceKey, DeviceName, MacAddress, OrgId,
    Organization, OrganizationFields, Slug,
};

/// The active organization `Bench` (slug `bench`) the benchmarks' fleets belong to.
pub fn bench_organization(db: &dyn Backend) -> anyhow::Result<Organization> {
    Ok(db.create_organization(OrganizationFields {
        name: "Bench".into(),
        slug: Slug::parse("bench").map_err(anyhow::Error::msg)?,
        description: String::new(),
        email: String::new(),
        url: String::new(),
        is_active: true,
    })?)
}

/// Registers `count` devices named `{prefix}-{i}` in `organization`, 5,000 per transaction,
/// with generated keys and MACs `02:{mac_byte}:…` (pick one `mac_byte` per fleet so fleets
/// never collide).
pub fn register_devices(
    db: &dyn Backend,
    organization: OrgId,
    prefix: &str,
    mac_byte: u8,
    count: usize,
) -> anyhow::Result<Vec<Device>> {
    register_configured_devices(db, organization, prefix, mac_byte, count, None)
}

/// [`register_devices`], each device with the configuration `config` (rendered as it is
/// stored, as a device created through the API would be).
pub fn register_configured_devices(
    db: &dyn Backend,
    organization: OrgId,
    prefix: &str,
    mac_byte: u8,
    count: usize,
    config: Option<ConfigFields>,
) -> anyhow::Result<Vec<Device>> {
    register_fleet(db, organization, prefix, mac_byte, count, config, "")
}

/// [`register_configured_devices`], every device with hardware id `hardware_id` (a field
/// devices do not overwrite when they connect, unlike the model they report).
pub fn register_fleet(
    db: &dyn Backend,
    organization: OrgId,
    prefix: &str,
    mac_byte: u8,
    count: usize,
    config: Option<ConfigFields>,
    hardware_id: &str,
) -> anyhow::Result<Vec<Device>> {
    let mut devices = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(5_000) {
        let batch = chunk
            .iter()
            .map(|&i| {
                let b = (i as u32).to_be_bytes();
                let fields = DeviceFields {
                    name: DeviceName::parse(&format!("{prefix}-{i}"))
                        .map_err(anyhow::Error::msg)?,
                    organization,
                    group: None,
                    mac_address: MacAddress::parse(&format!(
                        "02:{mac_byte:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        b[0], b[1], b[2], b[3]
                    ))
                    .map_err(anyhow::Error::msg)?,
                    key: DeviceKey::generate(),
                    last_ip: None,
                    management_ip: None,
                    model: String::new(),
                    os: String::new(),
                    system: String::new(),
                    notes: String::new(),
                    hardware_id: hardware_id.to_owned(),
                };
                Ok((fields, config.clone()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        devices.extend(db.create_devices(batch)?);
    }
    Ok(devices)
}

/// CPU time (user and system) process `pid` has used so far, in clock ticks
/// (`getconf CLK_TCK`, 100 on Linux); 0 if unreadable.
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The command name (field 2) may hold spaces: count fields after its `)`.
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace().skip(11);
            let user: u64 = fields.next()?.parse().ok()?;
            let system: u64 = fields.next()?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0)
}

/// Resident memory of process `pid` in KiB (0 if unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
