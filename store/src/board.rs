//! Image types and the boards they fit (OpenWISP's `OPENWRT_FIRMWARE_IMAGE_MAP`).
//!
//! An image's `type` names a firmware file flavour, e.g.
//! `ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin`; a device can install it when
//! its `model` (as it reports it) is one of that type's boards. fleetmq ships the defaults
//! below; operators add their own types through the API (stored, see
//! [`crate::UpgradeStore::create_image_type`]).

use serde::{Deserialize, Serialize};

/// One image type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageType {
    /// The type identifier (what images carry in `type`).
    pub name: String,
    /// Human-readable description.
    pub label: String,
    /// Device models that can install it, as devices report them.
    pub boards: Vec<String>,
    /// Whether it ships with fleetmq (defaults cannot be deleted).
    #[serde(default)]
    pub builtin: bool,
}

impl ImageType {
    /// Whether a device reporting `model` can install images of this type.
    pub fn fits(&self, model: &str) -> bool {
        !model.is_empty() && self.boards.iter().any(|b| b == model)
    }
}

/// `(type, label, boards)` shipped with fleetmq: common OpenWrt targets (names as OpenWISP's
/// map spells them) and the simulator's board.
const DEFAULTS: &[(&str, &str, &[&str])] = &[
    (
        "ar71xx-generic-tl-wdr4300-v1-squashfs-sysupgrade.bin",
        "TP-Link WDR4300 v1 (OpenWrt 19.07 and earlier)",
        &["TP-Link TL-WDR4300 v1"],
    ),
    (
        "ath79-generic-tplink_tl-wdr4300-v1-squashfs-sysupgrade.bin",
        "TP-Link WDR4300 v1 (OpenWrt 19.07 and later)",
        &["TP-Link TL-WDR4300 v1"],
    ),
    (
        "ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
        "TP-Link Archer C7 v5",
        &["TP-Link Archer C7 v5"],
    ),
    (
        "ath79-generic-ubnt_unifi-squashfs-sysupgrade.bin",
        "Ubiquiti UniFi AP",
        &["Ubiquiti UniFi"],
    ),
    (
        "ramips-mt7621-zbt-wg3526-16M-squashfs-sysupgrade.bin",
        "ZBT-WG3526 (16M)",
        &["ZBT-WG3526 (16M)"],
    ),
    (
        "ramips-mt7621-xiaomi_mi-router-4a-gigabit-squashfs-sysupgrade.bin",
        "Xiaomi Mi Router 4A Gigabit Edition",
        &["Xiaomi Mi Router 4A Gigabit Edition"],
    ),
    (
        "octeon-erlite-squashfs-sysupgrade.tar",
        "Ubiquiti EdgeRouter Lite",
        &["Ubiquiti EdgeRouter Lite"],
    ),
    (
        "x86-64-combined-squashfs.img.gz",
        "x86 64 bit (VMware, QEMU, PC Engines)",
        &[
            "VMware, Inc. VMware Virtual Platform",
            "QEMU Standard PC (i440FX + PIIX, 1996)",
            "PC Engines APU2",
        ],
    ),
    (
        "x86-generic-combined-squashfs.img.gz",
        "x86 32 bit (VMware)",
        &["VMware, Inc. VMware Virtual Platform"],
    ),
    (
        "fleetmq-sim-squashfs-sysupgrade.bin",
        "fleetmq simulated device",
        &["sim-board"],
    ),
];

/// The image types fleetmq ships.
pub fn default_image_types() -> Vec<ImageType> {
    DEFAULTS
        .iter()
        .map(|(name, label, boards)| ImageType {
            name: (*name).to_owned(),
            label: (*label).to_owned(),
            boards: boards.iter().map(|b| (*b).to_owned()).collect(),
            builtin: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulator_board_fits_its_default_type() {
        let types = default_image_types();
        let sim = types
            .iter()
            .find(|t| t.name == "fleetmq-sim-squashfs-sysupgrade.bin")
            .unwrap();
        assert!(sim.fits("sim-board"));
        assert!(!sim.fits("TP-Link TL-WDR4300 v1"));
        assert!(!sim.fits(""));
        let names: std::collections::BTreeSet<_> = types.iter().map(|t| &t.name).collect();
        assert_eq!(names.len(), types.len(), "type names are unique");
    }
}
