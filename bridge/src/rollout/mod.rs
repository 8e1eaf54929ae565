//! The rollout engine: drives every upgrade operation in progress through the device's
//! npm.system_update state machine ([`machine`]), within each batch's rollout limits.
//!
//! One task owns every operation in progress. It takes events (operations started or
//! cancelled by the API, devices' `up/update`, `up/images` and `up/update/response` messages,
//! sessions opening and closing), applies all that queued up at once, handles passed
//! deadlines, then asks [`schedule`] per batch which queued operations start (or whether the
//! batch aborts), and writes every changed operation plus the devices' reports in **one**
//! transaction. Each pass reads the clock once and hands that instant to every decision.
//! Only after that commit does it acknowledge the device messages (so their PUBACK means "stored") and send
//! the devices the requests of their new steps. A crash therefore loses nothing acknowledged,
//! and on restart the engine picks up every operation in progress from its persisted step,
//! re-sending that step's request when the device reconnects (devices answer repeats
//! idempotently).
//!
//! Software installations (OTAO) are the same work with a different decision source: the
//! bridge's [`crate::software`] decides which installations exist, and this engine drives them
//! ([`installation`]'s steps) within their software version's rollout limits, in the same
//! passes and the same transactions as firmware operations.

pub mod installation;
pub mod machine;
pub mod schedule;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::mqtt::Mqtt;
use fleetmq_protocol::SoftwareStatus;
use fleetmq_protocol::{
    Call, DownChannel, ImagesResource, Topic, UpChannel, UpdateRequest, UpdateResource,
    UpdateResponse,
};
use fleetmq_store::{
    Batch, BatchId, DOWNLOAD_SECRET, DeviceId, DownloadGrant, Installation, InstallationId,
    Software, SoftwareId, StartedUpgrades, Store, StoreError, Timestamp, UpdateReport, UpgradeId,
    UpgradeOperation, UpgradeStatus, UpgradeStep,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::device_calls::OnlineDevices;
use crate::metrics::Metrics;
use crate::software::triggers::Triggers;
pub use machine::UpgradePolicy;
use schedule::{Decision, Run};

/// Events applied in one pass (and one transaction) at most.
const MAX_EVENTS_PER_PASS: usize = 4096;

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// Timeouts and retries.
    pub policy: UpgradePolicy,
    /// Base URL devices download firmware from (this server's API), e.g.
    /// `http://192.0.2.10:8000`; empty = the server fills in its HTTP address.
    pub public_url: String,
    /// How long a download link stays valid.
    pub link_lifetime: Duration,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            policy: UpgradePolicy::default(),
            public_url: String::new(),
            link_lifetime: Duration::from_secs(3600),
        }
    }
}

/// A device message for the engine.
#[derive(Debug)]
pub enum Report {
    /// `up/update`.
    Update(UpdateResource),
    /// `up/images`.
    Images(ImagesResource),
    /// `up/update/response` nobody else waited for.
    Response(UpdateResponse),
}

enum Event {
    Started(StartedUpgrades),
    Cancelled(Vec<UpgradeOperation>),
    Report {
        device: DeviceId,
        report: Report,
        ack: oneshot::Sender<Result<(), String>>,
    },
    Session {
        device: DeviceId,
        online: bool,
    },
    Deactivated(DeviceId),
    /// Installations the decision source stored, with their software versions.
    Installations {
        software: Vec<Software>,
        installations: Vec<Installation>,
    },
    /// A software version's rollout limits may have changed.
    SoftwareChanged(Software),
    /// The operations in progress and their batches as stored, after another node sharing
    /// the store wrote upgrades (started or cancelled some over its REST API).
    Resync {
        active: Vec<UpgradeOperation>,
        batches: Vec<Batch>,
    },
    /// A device's `up/software/status`.
    SoftwareStatus {
        device: DeviceId,
        status: SoftwareStatus,
        ack: oneshot::Sender<Result<(), String>>,
    },
}

/// The engine's inbox; cheap to clone.
#[derive(Clone)]
pub struct Rollouts {
    events: mpsc::UnboundedSender<Event>,
}

impl Rollouts {
    /// Starts the engine over the operations in progress in the store.
    pub async fn start(
        store: Store,
        broker: Mqtt,
        online: OnlineDevices,
        config: RolloutConfig,
        metrics: Metrics,
        triggers: Triggers,
        shutdown: CancellationToken,
    ) -> Result<(Rollouts, tokio::task::JoinHandle<()>), StoreError> {
        let (secret, active, installing) = store
            .run(|db| {
                Ok((
                    db.secret(DOWNLOAD_SECRET)?,
                    db.active_upgrades()?,
                    db.active_installations()?,
                ))
            })
            .await?;
        let wanted: HashSet<(fleetmq_store::OrgId, String, String)> = installing
            .iter()
            .map(|i| (i.organization, i.app_name.clone(), i.version.to_string()))
            .collect();
        let software = store
            .run(move |db| {
                let mut found = Vec::new();
                for (org, app, version) in wanted {
                    if let Ok(version) = fleetmq_store::SemVer::parse(&version)
                        && let Some(software) = db.software(org, &app, &version)?
                    {
                        found.push(software);
                    }
                }
                Ok(found)
            })
            .await?;
        let batch_ids: HashSet<BatchId> = active.iter().filter_map(|o| o.batch).collect();
        let batches = store
            .run(move |db| {
                let mut batches = Vec::new();
                for id in batch_ids {
                    if let Some(batch) = db.batch(id)? {
                        batches.push(batch);
                    }
                }
                Ok(batches)
            })
            .await?;
        let (events, inbox) = mpsc::unbounded_channel();
        let mut engine = Engine {
            events: events.downgrade(),
            store,
            broker,
            online,
            config,
            metrics,
            secret,
            ops: HashMap::new(),
            by_device: HashMap::new(),
            runs: HashMap::new(),
            requests: HashMap::new(),
            installs: HashMap::new(),
            installs_by_device: HashMap::new(),
            software_runs: HashMap::new(),
            triggers,
        };
        for batch in batches {
            engine.add_run(&batch);
        }
        for software in &software {
            engine.software_run(software);
        }
        if !installing.is_empty() {
            tracing::info!(
                installations = installing.len(),
                "resuming software installations"
            );
        }
        for inst in installing {
            engine.add_install(inst);
        }
        if !active.is_empty() {
            tracing::info!(operations = active.len(), "resuming upgrade operations");
        }
        for op in active {
            engine.add(op);
        }
        let task = tokio::spawn(engine.run(inbox, shutdown));
        Ok((Rollouts { events }, task))
    }

    /// Operations the API stored: drive them.
    pub fn started(&self, started: StartedUpgrades) {
        let _ = self.events.send(Event::Started(started));
    }

    /// Operations the API cancelled in the store: stop driving them, tidy their devices.
    pub fn cancelled(&self, operations: Vec<UpgradeOperation>) {
        let _ = self.events.send(Event::Cancelled(operations));
    }

    /// Another node wrote upgrade operations: drive the ones in progress this engine does not
    /// know, and stop driving the ones that ended there (cancelled, aborted).
    pub async fn resync(&self, store: &Store) -> Result<(), StoreError> {
        let (active, batches) = store
            .run(|db| {
                let active = db.active_upgrades()?;
                let ids: HashSet<BatchId> = active.iter().filter_map(|o| o.batch).collect();
                let mut batches = Vec::new();
                for id in ids {
                    if let Some(batch) = db.batch(id)? {
                        batches.push(batch);
                    }
                }
                Ok((active, batches))
            })
            .await?;
        let _ = self.events.send(Event::Resync { active, batches });
        Ok(())
    }

    /// A device was deactivated (the store aborted its upgrades): forget them.
    pub fn deactivated(&self, device: DeviceId) {
        let _ = self.events.send(Event::Deactivated(device));
    }

    /// Installations the decision source stored: drive them.
    pub fn installations(&self, software: Vec<Software>, installations: Vec<Installation>) {
        let _ = self.events.send(Event::Installations {
            software,
            installations,
        });
    }

    /// A software version changed (its rollout limits may have).
    pub fn software_changed(&self, software: Software) {
        let _ = self.events.send(Event::SoftwareChanged(software));
    }

    /// A device's `up/software/status`; resolves once its effect is stored.
    pub async fn software_status(
        &self,
        device: DeviceId,
        status: SoftwareStatus,
    ) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.events
            .send(Event::SoftwareStatus {
                device,
                status,
                ack,
            })
            .map_err(|_| "the rollout engine stopped".to_owned())?;
        done.await
            .map_err(|_| "the rollout engine stopped".to_owned())?
    }

    /// A device's session opened or closed.
    pub fn session(&self, device: DeviceId, online: bool) {
        let _ = self.events.send(Event::Session { device, online });
    }

    /// A device's report; resolves once its effect is stored.
    pub async fn report(&self, device: DeviceId, report: Report) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.events
            .send(Event::Report {
                device,
                report,
                ack,
            })
            .map_err(|_| "the rollout engine stopped".to_owned())?;
        done.await
            .map_err(|_| "the rollout engine stopped".to_owned())?
    }
}

struct Engine {
    store: Store,
    broker: Mqtt,
    online: OnlineDevices,
    config: RolloutConfig,
    metrics: Metrics,
    secret: [u8; 32],
    ops: HashMap<UpgradeId, UpgradeOperation>,
    by_device: HashMap<DeviceId, UpgradeId>,
    runs: HashMap<BatchId, Run>,
    /// Requests the engine sent, by correlation id: the operation and its attempt then.
    requests: HashMap<Uuid, SentCall>,
    /// Software installations in progress.
    installs: HashMap<InstallationId, Installation>,
    installs_by_device: HashMap<DeviceId, HashSet<InstallationId>>,
    /// One run per software version with installations (its rollout limits).
    software_runs: HashMap<SoftwareId, Run>,
    /// Tells the decision source about finished hops (the next hop may follow).
    triggers: Triggers,
    /// The engine's own inbox, for work that finishes after a store read (weak: the engine
    /// stops when every handle is gone).
    events: mpsc::WeakUnboundedSender<Event>,
}

/// What one pass changed and must do after its commit.
#[derive(Default)]
struct Pass {
    dirty: HashSet<UpgradeId>,
    /// Status of each dirty operation before the pass.
    before: HashMap<UpgradeId, UpgradeStatus>,
    outbox: Vec<(UpgradeId, DeviceId, Call)>,
    reports: HashMap<DeviceId, UpdateReport>,
    acks: Vec<oneshot::Sender<Result<(), String>>>,
    notes: Vec<(BatchId, String)>,
    /// Installations changed in this pass, with their status before it.
    installs_before: HashMap<InstallationId, UpgradeStatus>,
    install_outbox: Vec<(InstallationId, DeviceId, installation::Message)>,
    /// Software versions whose abort threshold tripped: suspend them with this note.
    suspend: Vec<(SoftwareId, String)>,
}

impl Pass {
    fn touch(&mut self, op: &UpgradeOperation) {
        self.before.entry(op.id).or_insert(op.status);
        self.dirty.insert(op.id);
    }

    fn touch_install(&mut self, inst: &Installation) {
        self.installs_before.entry(inst.id).or_insert(inst.status);
    }
}

impl Engine {
    fn add_run(&mut self, batch: &Batch) {
        self.runs.entry(batch.id).or_insert_with(|| Run::new(batch));
    }

    fn add(&mut self, op: UpgradeOperation) {
        if let Some(previous) = self.by_device.insert(op.device, op.id)
            && previous != op.id
        {
            self.ops.remove(&previous);
        }
        self.ops.insert(op.id, op);
    }

    fn software_run(&mut self, software: &Software) {
        match self.software_runs.get_mut(&software.id) {
            Some(run) => run.set_rollout(software.fields.rollout.clone()),
            None => {
                self.software_runs
                    .insert(software.id, Run::of_software(software));
            }
        }
    }

    fn add_install(&mut self, inst: Installation) {
        self.installs_by_device
            .entry(inst.device)
            .or_default()
            .insert(inst.id);
        self.installs.insert(inst.id, inst);
    }

    fn remove_install(&mut self, id: InstallationId) -> Option<Installation> {
        let inst = self.installs.remove(&id)?;
        if let Some(ids) = self.installs_by_device.get_mut(&inst.device) {
            ids.remove(&id);
            if ids.is_empty() {
                self.installs_by_device.remove(&inst.device);
            }
        }
        Some(inst)
    }

    fn remove(&mut self, id: UpgradeId) -> Option<UpgradeOperation> {
        let op = self.ops.remove(&id)?;
        if self.by_device.get(&op.device) == Some(&id) {
            self.by_device.remove(&op.device);
        }
        Some(op)
    }

    /// The signed link of the operation's image. Within one fetch phase it is the same link
    /// every time (it expires relative to the phase's deadline), so a device that gets the
    /// fetch again recognises it.
    fn download_url(&self, op: &UpgradeOperation, now: Timestamp) -> String {
        DownloadGrant::expiring(
            op.image,
            op.device,
            op.deadline.unwrap_or(now),
            self.config.link_lifetime,
        )
        .link(&self.config.public_url, op.build, &self.secret)
    }

    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Event>, shutdown: CancellationToken) {
        let mut wake: Option<Instant> = Some(Instant::now());
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                event = inbox.recv() => match event {
                    Some(event) => Some(event),
                    None => return,
                },
                () = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => None,
            };
            let mut pass = Pass::default();
            // The pass's one clock reading; `Instant` only converts the next wake-up.
            let (now, instant_now) = (Timestamp::now(), Instant::now());
            if let Some(first) = first {
                self.apply(first, &mut pass, now);
                for _ in 1..MAX_EVENTS_PER_PASS {
                    match inbox.try_recv() {
                        Ok(event) => self.apply(event, &mut pass, now),
                        Err(_) => break,
                    }
                }
            }
            wake = self.schedule(&mut pass, now).map(|at| {
                let wait = at.as_micros().saturating_sub(now.as_micros()).max(0);
                instant_now + Duration::from_micros(wait as u64)
            });
            self.commit(pass).await;
        }
    }

    fn apply(&mut self, event: Event, pass: &mut Pass, now: Timestamp) {
        let policy = self.config.policy.clone();
        match event {
            Event::Started(started) => {
                for op in &started.superseded {
                    self.remove(op.id);
                }
                if let Some(batch) = &started.batch {
                    self.add_run(batch);
                }
                for op in started.operations {
                    self.add(op);
                }
            }
            Event::Resync { active, batches } => {
                for batch in &batches {
                    if !self.runs.contains_key(&batch.id) {
                        self.add_run(batch);
                    }
                }
                let current: HashSet<UpgradeId> = active.iter().map(|o| o.id).collect();
                for op in active {
                    if !self.ops.contains_key(&op.id) {
                        self.add(op);
                    }
                }
                let vanished: Vec<UpgradeId> = self
                    .ops
                    .keys()
                    .filter(|id| !current.contains(id))
                    .copied()
                    .collect();
                if !vanished.is_empty() {
                    self.ended_elsewhere(vanished);
                }
            }
            Event::Cancelled(ops) => {
                for cancelled in ops {
                    let Some(op) = self.remove(cancelled.id) else {
                        continue;
                    };
                    // Cancelled over the API, or (ended on another node) as stored.
                    let status = match cancelled.status {
                        UpgradeStatus::InProgress => UpgradeStatus::Cancelled,
                        ended => ended,
                    };
                    if let Some(run) = op.batch.and_then(|b| self.runs.get_mut(&b)) {
                        run.count(UpgradeStatus::InProgress, status);
                    }
                    pass.outbox.extend(
                        machine::cleanup(&op)
                            .into_iter()
                            .map(|call| (op.id, op.device, call)),
                    );
                }
            }
            Event::Deactivated(device) => {
                // The store aborted the device's installations with its deactivation.
                let ids: Vec<InstallationId> = self
                    .installs_by_device
                    .get(&device)
                    .map(|ids| ids.iter().copied().collect())
                    .unwrap_or_default();
                for id in ids {
                    if let Some(inst) = self.remove_install(id)
                        && let Some(run) = self.software_runs.get_mut(&inst.software)
                    {
                        run.count(UpgradeStatus::InProgress, UpgradeStatus::Aborted);
                    }
                }
                if let Some(id) = self.by_device.get(&device).copied()
                    && let Some(op) = self.remove(id)
                    && let Some(run) = op.batch.and_then(|b| self.runs.get_mut(&b))
                {
                    run.count(UpgradeStatus::InProgress, UpgradeStatus::Aborted);
                }
            }
            Event::Installations {
                software,
                installations,
            } => {
                for software in &software {
                    self.software_run(software);
                }
                for inst in installations {
                    self.add_install(inst);
                }
            }
            Event::SoftwareChanged(software) => {
                if let Some(run) = self.software_runs.get_mut(&software.id) {
                    let reopened = run.aborted_at().is_some_and(|at| {
                        software.note.is_empty()
                            && software.fields.rollout_strategy
                                != fleetmq_store::RolloutStrategy::Suspended
                            && software.modified > at
                    });
                    if reopened {
                        tracing::info!(software = %software.id, "software rollout re-opened");
                        run.reopen(software.fields.rollout.clone());
                    } else {
                        run.set_rollout(software.fields.rollout.clone());
                    }
                }
                if software.fields.rollout_strategy == fleetmq_store::RolloutStrategy::Suspended {
                    // Nobody new: what was never sent stops; hops under way finish.
                    for inst in self.installs.values_mut().filter(|i| {
                        i.software == software.id
                            && i.step == fleetmq_store::InstallStep::Queued
                            && i.attempt == 0
                            && i.status == UpgradeStatus::InProgress
                    }) {
                        pass.touch_install(inst);
                        inst.finish(
                            UpgradeStatus::Cancelled,
                            "The version was suspended before it was delivered",
                            now,
                        );
                    }
                }
            }
            Event::SoftwareStatus {
                device,
                status,
                ack,
            } => {
                pass.acks.push(ack);
                let id = InstallationId(status.id);
                match self.installs.get_mut(&id) {
                    // Only the installation's own device may answer it.
                    Some(inst) if inst.device == device => {
                        pass.touch_install(inst);
                        let messages = installation::on_status(inst, &status, &policy, now);
                        pass.install_outbox
                            .extend(messages.into_iter().map(|m| (id, device, m)));
                    }
                    _ => {
                        tracing::debug!(%device, installation = %id, "status about no installation in progress")
                    }
                }
            }
            Event::Session { device, online } => {
                if online {
                    for id in self.installs_by_device.get(&device).into_iter().flatten() {
                        if let Some(inst) = self.installs.get(id) {
                            pass.install_outbox.extend(
                                installation::resend(inst)
                                    .into_iter()
                                    .map(|m| (inst.id, device, m)),
                            );
                        }
                    }
                }
                let Some(id) = self.by_device.get(&device).copied() else {
                    return;
                };
                let url = self.ops.get(&id).map(|op| self.download_url(op, now));
                let Some(op) = self.ops.get_mut(&id) else {
                    return;
                };
                if online {
                    for call in machine::resend(op, || url.unwrap_or_default()) {
                        pass.outbox.push((op.id, op.device, call));
                    }
                } else {
                    pass.touch(op);
                    machine::on_offline(op);
                }
            }
            Event::Report {
                device,
                report,
                ack,
            } => {
                pass.acks.push(ack);
                let stored = pass.reports.entry(device).or_default();
                stored.modified = Some(now);
                let op = self
                    .by_device
                    .get(&device)
                    .and_then(|id| self.ops.get_mut(id));
                let calls = match report {
                    Report::Update(update) => {
                        tracing::debug!(%device, state = ?update.state, step = ?op.as_ref().map(|o| o.step), "update report");
                        stored.update = serde_json::to_value(&update).ok();
                        match op {
                            Some(op) => {
                                pass.touch(op);
                                machine::on_update(op, &update, &policy, now)
                            }
                            None => Vec::new(),
                        }
                    }
                    Report::Images(images) => {
                        stored.images = serde_json::to_value(&images).ok();
                        match op {
                            Some(op) => {
                                pass.touch(op);
                                machine::on_images(op, &images, &policy, now)
                            }
                            None => Vec::new(),
                        }
                    }
                    // An answer to an earlier attempt's request (it came after the deadline that
                    // retried it) says nothing about the current attempt.
                    Report::Response(response) => match (self.requests.remove(&response.id), op) {
                        (Some(sent), Some(op))
                            if op.id == sent.op && op.attempt == sent.attempt =>
                        {
                            pass.touch(op);
                            machine::on_response(op, &sent.call, &response, &policy, now)
                        }
                        _ => Vec::new(),
                    },
                };
                if let Some(id) = self.by_device.get(&device) {
                    pass.outbox
                        .extend(calls.into_iter().map(|call| (*id, device, call)));
                }
            }
        }
    }

    /// Handles passed deadlines, counts the pass's outcomes into the batches, applies each
    /// batch's [`schedule::admit`] decision, and returns when to look again.
    fn schedule(&mut self, pass: &mut Pass, now: Timestamp) -> Option<Timestamp> {
        let policy = self.config.policy.clone();
        let mut wake: Option<Timestamp> = None;
        let mut earliest = |at: Timestamp| {
            if wake.is_none_or(|w| at < w) {
                wake = Some(at);
            }
        };
        // Only operations that may act now need to know whether their device is online.
        let online = self.online.filter(
            self.ops
                .values()
                .filter(|o| {
                    o.deadline.is_some_and(|d| d <= now)
                        || (o.step == UpgradeStep::Queued && o.not_before.is_none_or(|t| t <= now))
                })
                .map(|o| o.device)
                .chain(
                    self.installs
                        .values()
                        .filter(|i| {
                            i.deadline.is_some_and(|d| d <= now)
                                || (i.step == fleetmq_store::InstallStep::Queued
                                    && i.not_before.is_none_or(|t| t <= now))
                        })
                        .map(|i| i.device),
                ),
        );

        // Deadlines first: they may put operations back in the queue.
        for op in self.ops.values_mut() {
            if let Some(deadline) = op.deadline {
                if deadline <= now {
                    pass.touch(op);
                    let calls = machine::on_deadline(op, online.contains(&op.device), &policy, now);
                    pass.outbox
                        .extend(calls.into_iter().map(|c| (op.id, op.device, c)));
                } else {
                    earliest(deadline);
                }
            }
        }
        self.count_outcomes(pass);

        let mut by_batch: HashMap<Option<BatchId>, Vec<&UpgradeOperation>> = HashMap::new();
        for op in self.ops.values() {
            by_batch.entry(op.batch).or_default().push(op);
        }
        let mut decisions = Vec::with_capacity(by_batch.len());
        for (batch, ops) in by_batch {
            let mut unlimited = Run::unlimited();
            let run = batch
                .and_then(|b| self.runs.get_mut(&b))
                .unwrap_or(&mut unlimited);
            decisions.push((batch, schedule::admit(run, &ops, &online, now)));
        }

        for (batch, decision) in decisions {
            match decision {
                Decision::Admit { dispatch, wake } => {
                    if let Some(at) = wake {
                        earliest(at);
                    }
                    for id in dispatch {
                        let url = match self.ops.get(&id) {
                            Some(op) => {
                                let mut phase = op.clone();
                                phase.deadline = Some(machine::fetch_deadline(&policy, now));
                                self.download_url(&phase, now)
                            }
                            None => continue,
                        };
                        if let Some(op) = self.ops.get_mut(&id) {
                            pass.touch(op);
                            let calls = machine::dispatch(op, url, &policy, now);
                            pass.outbox
                                .extend(calls.into_iter().map(|c| (op.id, op.device, c)));
                            if let Some(deadline) = op.deadline {
                                earliest(deadline);
                            }
                        }
                    }
                }
                Decision::Abort { operations, note } => {
                    for id in operations {
                        if let Some(op) = self.ops.get_mut(&id) {
                            pass.touch(op);
                            let calls = machine::abort(op, &note);
                            pass.outbox
                                .extend(calls.into_iter().map(|c| (op.id, op.device, c)));
                        }
                    }
                    if let Some(batch) = batch {
                        tracing::warn!(%batch, %note, "batch aborted");
                        pass.notes.push((batch, note));
                    }
                }
            }
        }
        if let Some(at) = self.schedule_installs(pass, &online, now) {
            earliest(at);
        }
        wake
    }

    /// [`Engine::schedule`] for software installations: deadlines, outcomes counted into
    /// their software's run, then each software version's [`schedule::admit`] decision.
    fn schedule_installs(
        &mut self,
        pass: &mut Pass,
        online: &HashSet<DeviceId>,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let policy = self.config.policy.clone();
        let mut wake: Option<Timestamp> = None;
        let mut earliest = |at: Timestamp| {
            if wake.is_none_or(|w| at < w) {
                wake = Some(at);
            }
        };
        for inst in self.installs.values_mut() {
            if let Some(deadline) = inst.deadline {
                if deadline <= now {
                    pass.touch_install(inst);
                    installation::on_deadline(inst, online.contains(&inst.device), &policy, now);
                } else {
                    earliest(deadline);
                }
            }
        }
        for (id, before) in &pass.installs_before {
            if let Some(inst) = self.installs.get(id)
                && let Some(run) = self.software_runs.get_mut(&inst.software)
            {
                run.count(*before, inst.status);
            }
        }
        // Counted once: later changes in this pass count from here.
        for (id, before) in pass.installs_before.iter_mut() {
            if let Some(inst) = self.installs.get(id) {
                *before = inst.status;
            }
        }
        let mut by_software: HashMap<SoftwareId, Vec<&Installation>> = HashMap::new();
        for inst in self.installs.values() {
            by_software.entry(inst.software).or_default().push(inst);
        }
        let mut decisions = Vec::with_capacity(by_software.len());
        for (software, installs) in by_software {
            let mut unlimited = Run::unlimited();
            let run = self
                .software_runs
                .get_mut(&software)
                .unwrap_or(&mut unlimited);
            decisions.push((software, schedule::admit(run, &installs, online, now)));
        }
        for (software, decision) in decisions {
            match decision {
                Decision::Admit {
                    dispatch,
                    wake: later,
                } => {
                    if let Some(at) = later {
                        earliest(at);
                    }
                    for id in dispatch {
                        if let Some(inst) = self.installs.get_mut(&id) {
                            pass.touch_install(inst);
                            let messages = installation::dispatch(inst, &policy, now);
                            pass.install_outbox
                                .extend(messages.into_iter().map(|m| (id, inst.device, m)));
                            if let Some(deadline) = inst.deadline {
                                earliest(deadline);
                            }
                        }
                    }
                }
                Decision::Abort { operations, note } => {
                    for id in operations {
                        if let Some(inst) = self.installs.get_mut(&id) {
                            pass.touch_install(inst);
                            installation::abort(inst, &note, now);
                        }
                    }
                    tracing::warn!(%software, %note, "software rollout aborted and suspended");
                    pass.suspend.push((software, note));
                }
            }
        }
        wake
    }

    /// Counts the status changes of this pass so far into their batches' runs (the abort
    /// threshold's input). Called once per pass, before the batches are scheduled.
    fn count_outcomes(&mut self, pass: &Pass) {
        for id in &pass.dirty {
            let Some(op) = self.ops.get(id) else { continue };
            let before = pass.before.get(id).copied().unwrap_or(op.status);
            if let Some(run) = op.batch.and_then(|b| self.runs.get_mut(&b)) {
                run.count(before, op.status);
            }
        }
    }

    /// Persists the pass, then acknowledges and sends.
    async fn commit(&mut self, pass: Pass) {
        let ops: Vec<UpgradeOperation> = pass
            .dirty
            .iter()
            .filter_map(|id| self.ops.get(id).cloned())
            .collect();
        let installs: Vec<Installation> = pass
            .installs_before
            .keys()
            .filter_map(|id| self.installs.get(id).cloned())
            .collect();
        let reports: Vec<(DeviceId, UpdateReport)> = pass.reports.into_iter().collect();
        if ops.is_empty()
            && installs.is_empty()
            && reports.is_empty()
            && pass.outbox.is_empty()
            && pass.install_outbox.is_empty()
            && pass.acks.is_empty()
        {
            return;
        }
        let ids: Vec<UpgradeId> = ops.iter().map(|o| o.id).collect();
        let install_ids: Vec<InstallationId> = installs.iter().map(|i| i.id).collect();
        let notes = pass.notes;
        let suspend = pass.suspend;
        let written = self
            .store
            .run(move |db| {
                let refused = if ops.is_empty() && reports.is_empty() {
                    Vec::new()
                } else {
                    db.write_upgrades(ops, reports)?
                };
                for (batch, note) in notes {
                    db.note_batch(batch, note)?;
                }
                let refused_installs = if installs.is_empty() {
                    Vec::new()
                } else {
                    db.write_installations(installs)?
                };
                for (software, note) in suspend {
                    db.suspend_software(software, note)?;
                }
                Ok((refused, refused_installs))
            })
            .await;
        let (refused, refused_installs): (HashSet<UpgradeId>, HashSet<InstallationId>) =
            match written {
                Ok((ops, installs)) => (ops.into_iter().collect(), installs.into_iter().collect()),
                Err(e) => {
                    tracing::error!(error = %e, "upgrade progress not stored; reloading");
                    for ack in pass.acks {
                        let _ = ack.send(Err(e.to_string()));
                    }
                    self.reload(ids).await;
                    self.reload_installs(install_ids).await;
                    return;
                }
            };
        for ack in pass.acks {
            let _ = ack.send(Ok(()));
        }
        for id in &refused {
            self.remove(*id);
        }
        for id in &ids {
            if let Some(op) = self.ops.get(id)
                && op.status != UpgradeStatus::InProgress
            {
                self.metrics.upgrade_finished(op.status);
                self.remove(*id);
            }
        }
        for id in &refused_installs {
            self.remove_install(*id);
        }
        for id in &install_ids {
            if let Some(inst) = self.installs.get(id)
                && inst.status != UpgradeStatus::InProgress
            {
                self.metrics.installation_finished(inst.status);
                // The device may have a next hop, or another path after a failure.
                self.triggers.device(inst.device);
                self.remove_install(*id);
            }
        }
        for (op, device, call) in pass.outbox {
            if refused.contains(&op) {
                continue;
            }
            self.send(op, device, call).await;
        }
        for (id, device, message) in pass.install_outbox {
            if refused_installs.contains(&id) {
                continue;
            }
            self.send_install(device, message).await;
        }
        if self.requests.len() > 4 * self.ops.len() + 1024 {
            let ops = &self.ops;
            self.requests.retain(|_, sent| ops.contains_key(&sent.op));
        }
    }

    /// After a failed write, forgets the in-memory changes to installations: the store is the
    /// truth.
    async fn reload_installs(&mut self, ids: Vec<InstallationId>) {
        if ids.is_empty() {
            return;
        }
        let loaded = self
            .store
            .run(move |db| {
                let mut found = Vec::new();
                for id in ids {
                    found.push((id, db.installation(id)?));
                }
                Ok(found)
            })
            .await;
        match loaded {
            Ok(found) => {
                for (id, inst) in found {
                    self.remove_install(id);
                    if let Some(inst) = inst
                        && inst.status == UpgradeStatus::InProgress
                    {
                        self.add_install(inst);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot reload software installations"),
        }
    }

    async fn send_install(&mut self, device: DeviceId, message: installation::Message) {
        let Some(slug) = self.online.slug(device) else {
            // Offline: the step's message is sent again when the device reconnects.
            return;
        };
        let (topic, payload) = message.publication(&slug, &device.to_string());
        if let Err(e) = self.broker.publish(&topic, payload, false).await {
            tracing::warn!(error = %e, %device, "software message not published");
        }
    }

    /// Operations this engine drives that were not in progress in the store when it was
    /// read: those that ended there (another node cancelled them, say) are handled like a
    /// cancellation here, once read; those started since the read are left alone.
    fn ended_elsewhere(&self, ids: Vec<UpgradeId>) {
        let (store, events) = (self.store.clone(), self.events.clone());
        tokio::spawn(async move {
            let ended = store
                .run(move |db| {
                    let mut ended = Vec::new();
                    for id in ids {
                        if let Some(op) = db.upgrade(id)?
                            && op.status != UpgradeStatus::InProgress
                        {
                            ended.push(op);
                        }
                    }
                    Ok(ended)
                })
                .await;
            match ended {
                Ok(ended) if !ended.is_empty() => {
                    if let Some(events) = events.upgrade() {
                        let _ = events.send(Event::Cancelled(ended));
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read operations that ended elsewhere"),
            }
        });
    }

    /// After a failed write, forgets the in-memory changes: the store is the truth.
    async fn reload(&mut self, ids: Vec<UpgradeId>) {
        let loaded = self
            .store
            .run(move |db| {
                let mut ops = Vec::new();
                for id in ids {
                    ops.push((id, db.upgrade(id)?));
                }
                Ok(ops)
            })
            .await;
        match loaded {
            Ok(ops) => {
                for (id, op) in ops {
                    match op {
                        Some(op) if op.status == UpgradeStatus::InProgress => self.add(op),
                        _ => {
                            self.remove(id);
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot reload upgrade operations"),
        }
    }

    async fn send(&mut self, op: UpgradeId, device: DeviceId, call: Call) {
        let Some(slug) = self.online.slug(device) else {
            // Offline: the step's request is sent again when the device reconnects.
            return;
        };
        let request = UpdateRequest::new(call.clone());
        let attempt = self.ops.get(&op).map_or(0, |o| o.attempt);
        self.requests
            .insert(request.id, SentCall { op, attempt, call });
        let topic = Topic::down(&slug, &device.to_string(), DownChannel::UpdateRequest);
        let reply_to = Topic::up(&slug, &device.to_string(), UpChannel::UpdateResponse);
        if let Err(e) = self
            .broker
            .publish_request(
                &topic.to_string(),
                request.to_bytes(),
                &reply_to.to_string(),
                request.id.to_string(),
            )
            .await
        {
            tracing::warn!(error = %e, %device, "update request not published");
        }
    }
}

/// A request the engine sent to a device, remembered until its answer.
struct SentCall {
    op: UpgradeId,
    attempt: u32,
    call: Call,
}
