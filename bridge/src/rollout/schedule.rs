//! When a batch's queued operations may start, as one pure function on an injected clock
//! ([`admit`]), next to [`super::machine`]'s per-operation steps.
//!
//! A batch's [`Rollout`] limits it four ways:
//! - **waves**: an operation starts only once every operation of the earlier waves ended (a
//!   canary first, then the rest);
//! - **`max_parallel`**: at most that many operations between the fetch and the end of
//!   flashing;
//! - **`rate_per_minute`**: at most that many starts within any minute;
//! - **abort threshold**: once enough operations finished and too many of them failed, every
//!   operation that may still be stopped is aborted and nothing more starts.
//!
//! The engine keeps one [`Run`] per batch, counts status changes into it, hands [`admit`] the
//! batch's operations and `now`, and applies the [`Decision`]: dispatch, or abort.
//!
//! A "batch" is whatever shares one [`Rollout`]: a firmware batch's upgrade operations, or the
//! installations of one software version (OTAO). [`admit`] reads operations only through
//! [`Scheduled`], so both kinds get the same limits by the same code.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

use fleetmq_store::{
    Batch, DeviceId, InstallStep, Installation, InstallationId, Rollout, StatusCounts, Timestamp,
    UpgradeId, UpgradeOperation, UpgradeStatus, UpgradeStep,
};

/// What the scheduler reads of an operation: a firmware upgrade operation or a software
/// installation.
pub trait Scheduled {
    /// Its identity.
    type Id: Copy + Eq + Ord + Hash + std::fmt::Debug;
    /// Its identity.
    fn id(&self) -> Self::Id;
    /// The device it runs on.
    fn device(&self) -> DeviceId;
    /// Its status.
    fn status(&self) -> UpgradeStatus;
    /// Its wave (0 = first).
    fn wave(&self) -> u32;
    /// Waiting for its turn.
    fn queued(&self) -> bool;
    /// Between its start and its end: counts against `max_parallel`.
    fn running(&self) -> bool;
    /// Whether an abort may still stop it.
    fn stoppable(&self) -> bool;
    /// Not before this instant (retry backoff).
    fn not_before(&self) -> Option<Timestamp>;
    /// When it was created (the queue's order).
    fn created(&self) -> Timestamp;
}

impl Scheduled for UpgradeOperation {
    type Id = UpgradeId;
    fn id(&self) -> UpgradeId {
        self.id
    }
    fn device(&self) -> DeviceId {
        self.device
    }
    fn status(&self) -> UpgradeStatus {
        self.status
    }
    fn wave(&self) -> u32 {
        self.wave
    }
    fn queued(&self) -> bool {
        self.step == UpgradeStep::Queued
    }
    fn running(&self) -> bool {
        matches!(
            self.step,
            UpgradeStep::Fetching | UpgradeStep::Initializing | UpgradeStep::Flashing
        )
    }
    fn stoppable(&self) -> bool {
        self.cancellable()
    }
    fn not_before(&self) -> Option<Timestamp> {
        self.not_before
    }
    fn created(&self) -> Timestamp {
        self.created
    }
}

impl Scheduled for Installation {
    type Id = InstallationId;
    fn id(&self) -> InstallationId {
        self.id
    }
    fn device(&self) -> DeviceId {
        self.device
    }
    fn status(&self) -> UpgradeStatus {
        self.status
    }
    /// A software rollout's waves are its filters' rollout dates: one wave here.
    fn wave(&self) -> u32 {
        0
    }
    fn queued(&self) -> bool {
        self.step == InstallStep::Queued
    }
    /// An offer waiting for consent holds no slot: people may take days to answer.
    fn running(&self) -> bool {
        matches!(self.step, InstallStep::Delivering | InstallStep::Installing)
    }
    fn stoppable(&self) -> bool {
        Installation::stoppable(self)
    }
    fn not_before(&self) -> Option<Timestamp> {
        self.not_before
    }
    fn created(&self) -> Timestamp {
        self.created
    }
}

/// The rate limit's window, in microseconds.
const MINUTE_MICROS: i64 = 60_000_000;

/// What the scheduler keeps about a batch between passes.
#[derive(Debug, Clone)]
pub struct Run {
    rollout: Rollout,
    /// Operations per status as the engine saw them (the abort threshold's input).
    counts: StatusCounts,
    /// When operations started within the last minute, oldest first (the rate limit's input).
    starts: VecDeque<Timestamp>,
    /// Aborted (when): nothing more starts.
    aborted: Option<Timestamp>,
}

impl Run {
    /// A batch's run, from its stored rollout and counts.
    pub fn new(batch: &Batch) -> Self {
        Self::with(batch.rollout.clone(), batch.counts)
    }

    /// A software version's run (OTAO), from its rollout limits and counts.
    pub fn of_software(software: &fleetmq_store::Software) -> Self {
        Self::with(software.fields.rollout.clone(), software.counts)
    }

    /// The rollout limits changed (an operator edited the software): keep the counts and the
    /// rate window, apply the new limits; a new threshold may un-abort it.
    pub fn set_rollout(&mut self, rollout: Rollout) {
        self.rollout = rollout;
    }

    /// When the abort threshold stopped it, if it did.
    pub fn aborted_at(&self) -> Option<Timestamp> {
        self.aborted
    }

    /// An operator re-opened a rollout the abort threshold stopped: its failures are counted
    /// afresh (the old ones made it stop), with the limits it has now.
    pub fn reopen(&mut self, rollout: Rollout) {
        self.rollout = rollout;
        self.aborted = None;
        self.counts = StatusCounts {
            in_progress: self.counts.in_progress,
            ..StatusCounts::default()
        };
    }

    /// Operations outside any batch (a single device's upgrade): no limits.
    pub fn unlimited() -> Self {
        Self::with(Rollout::default(), StatusCounts::default())
    }

    fn with(rollout: Rollout, counts: StatusCounts) -> Self {
        Self {
            rollout,
            counts,
            starts: VecDeque::new(),
            aborted: None,
        }
    }

    /// One of the batch's operations went from `before` to `after`.
    pub fn count(&mut self, before: UpgradeStatus, after: UpgradeStatus) {
        if before != after {
            self.counts.remove(before);
            self.counts.add(after);
        }
    }
}

/// What to do with a batch now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<Id = UpgradeId> {
    /// Dispatch these queued operations now, in this order. `wake`: when an operation held
    /// back by a retry backoff or the rate limit may start (no event will say so).
    Admit {
        /// Operations to dispatch.
        dispatch: Vec<Id>,
        /// When to look again, if only time will free an operation.
        wake: Option<Timestamp>,
    },
    /// The abort threshold tripped: abort these operations (every one that may still be
    /// stopped) and record `note` on the batch.
    Abort {
        /// Operations to abort.
        operations: Vec<Id>,
        /// Why, for the batch and each operation's log.
        note: String,
    },
}

/// Decides which of a batch's operations start now. `operations` are the batch's operations
/// the engine drives; `online` holds (at least) the devices of those that may start; `now` is
/// the only clock. Dispatched starts are recorded in `run` (rate limit), an abort too.
pub fn admit<Op: Scheduled>(
    run: &mut Run,
    operations: &[&Op],
    online: &HashSet<DeviceId>,
    now: Timestamp,
) -> Decision<Op::Id> {
    let mut wake: Option<Timestamp> = None;
    let mut earliest = |at: Timestamp| {
        if wake.is_none_or(|w| at < w) {
            wake = Some(at);
        }
    };
    let in_progress = || {
        operations
            .iter()
            .filter(|o| o.status() == UpgradeStatus::InProgress)
    };
    if run.aborted.is_some() {
        return Decision::Admit {
            dispatch: Vec::new(),
            wake: None,
        };
    }
    if let Some(note) = threshold_tripped(run) {
        run.aborted = Some(now);
        let aborted: Vec<Op::Id> = in_progress()
            .filter(|o| o.stoppable())
            .map(|o| o.id())
            .collect();
        for _ in &aborted {
            run.count(UpgradeStatus::InProgress, UpgradeStatus::Aborted);
        }
        return Decision::Abort {
            operations: aborted,
            note,
        };
    }

    // The wave in progress: the lowest wave with an operation left.
    let wave = in_progress().map(|o| o.wave()).min();
    let running = in_progress().filter(|o| o.running()).count() as u32;
    let mut ready: Vec<&Op> = in_progress()
        .filter(|o| o.queued())
        .filter(|o| match o.not_before() {
            Some(at) if at > now => {
                earliest(at);
                false
            }
            _ => true,
        })
        .filter(|o| online.contains(&o.device()))
        .filter(|o| wave.is_none_or(|w| o.wave() <= w))
        .copied()
        .collect();
    ready.sort_by_key(|o| (o.created(), o.id()));

    // Starts older than a minute no longer count; starts "after" now mean the wall clock
    // went back, and are dropped rather than holding the batch up until it catches up.
    run.starts
        .retain(|t| *t <= now && now.as_micros() - t.as_micros() < MINUTE_MICROS);
    // Slots free under max_parallel; those running end with an event that brings the engine
    // back, so no wake-up is needed for them.
    let free = run
        .rollout
        .max_parallel()
        .map_or(usize::MAX, |max| max.saturating_sub(running) as usize);
    let mut dispatch = Vec::new();
    for op in ready.into_iter().take(free) {
        if let Some(rate) = run.rollout.rate_per_minute()
            && run.starts.len() as u32 >= rate
        {
            if let Some(oldest) = run.starts.front() {
                earliest(Timestamp::from_micros(oldest.as_micros() + MINUTE_MICROS));
            }
            break;
        }
        if run.rollout.rate_per_minute().is_some() {
            run.starts.push_back(now);
        }
        dispatch.push(op.id());
    }
    Decision::Admit { dispatch, wake }
}

/// The abort note, if the batch's failures reached its threshold.
fn threshold_tripped(run: &Run) -> Option<String> {
    let threshold = run.rollout.abort_threshold()?;
    let counts = &run.counts;
    let finished = counts.success + counts.failed;
    if finished == 0 || finished < threshold.min_sample() {
        return None;
    }
    let rate = f64::from(counts.failed) / f64::from(finished);
    (rate >= threshold.failure_rate()).then(|| {
        format!(
            "Aborted: {} of {} finished upgrades failed ({:.0} %), at or above the abort \
             threshold of {:.0} %",
            counts.failed,
            finished,
            rate * 100.0,
            threshold.failure_rate() * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_store::{
        AbortThreshold, BatchId, BuildId, FailureRate, ImageId, Limit, OrgId, Waves,
    };

    const SECOND: i64 = 1_000_000;

    fn at(start: Timestamp, seconds: i64) -> Timestamp {
        Timestamp::from_micros(start.as_micros() + seconds * SECOND)
    }

    /// `n` queued operations of one batch, created a microsecond apart, in `waves`.
    fn batch(n: usize, rollout: &Rollout, start: Timestamp) -> Vec<UpgradeOperation> {
        let batch = BatchId::new();
        (0..n)
            .map(|i| UpgradeOperation {
                id: UpgradeId::new(),
                device: DeviceId::new(),
                organization: OrgId::new(),
                image: ImageId::new(),
                build: BuildId::new(),
                batch: Some(batch),
                status: UpgradeStatus::InProgress,
                progress: 0,
                log: String::new(),
                step: UpgradeStep::Queued,
                attempt: 0,
                device_image: None,
                discarded_images: Vec::new(),
                not_before: None,
                deadline: None,
                wave: rollout.wave_of(i, n),
                flagged: false,
                target_version: "2.0".into(),
                sha256: "abc".into(),
                created: Timestamp::from_micros(start.as_micros() + i as i64),
                modified: start,
            })
            .collect()
    }

    fn run_of(rollout: Rollout) -> Run {
        Run::with(rollout, StatusCounts::default())
    }

    fn all_online(ops: &[UpgradeOperation]) -> HashSet<DeviceId> {
        ops.iter().map(|o| o.device).collect()
    }

    /// Asks the scheduler and marks what it dispatched as fetching, as the engine would.
    fn pass(run: &mut Run, ops: &mut [UpgradeOperation], now: Timestamp) -> Decision {
        let online = all_online(ops);
        let refs: Vec<&UpgradeOperation> = ops.iter().collect();
        let decision = admit(run, &refs, &online, now);
        if let Decision::Admit { dispatch, .. } = &decision {
            for op in ops.iter_mut().filter(|o| dispatch.contains(&o.id)) {
                op.step = UpgradeStep::Fetching;
            }
        }
        decision
    }

    fn dispatched(decision: &Decision) -> usize {
        match decision {
            Decision::Admit { dispatch, .. } => dispatch.len(),
            Decision::Abort { .. } => panic!("unexpected abort: {decision:?}"),
        }
    }

    fn finish(run: &mut Run, op: &mut UpgradeOperation, status: UpgradeStatus) {
        run.count(op.status, status);
        op.finish(status, "done");
    }

    fn limit(n: i64) -> Option<Limit> {
        Limit::try_from(n).ok()
    }

    #[test]
    fn the_canary_wave_runs_alone_and_the_next_waits_for_it_to_end() {
        let t0 = Timestamp::now();
        let waves = Waves::try_from(vec![10u64, 100]).unwrap();
        let rollout = Rollout::new(None, None, waves, None);
        let mut ops = batch(20, &rollout, t0);
        let mut run = run_of(rollout);
        let first = pass(&mut run, &mut ops, t0);
        assert_eq!(dispatched(&first), 2, "10 % of 20: the canary");
        assert!(ops[..2].iter().all(|o| o.step == UpgradeStep::Fetching));

        finish(&mut run, &mut ops[0], UpgradeStatus::Success);
        assert_eq!(
            dispatched(&pass(&mut run, &mut ops, at(t0, 1))),
            0,
            "one canary still runs"
        );
        finish(&mut run, &mut ops[1], UpgradeStatus::Success);
        assert_eq!(dispatched(&pass(&mut run, &mut ops, at(t0, 2))), 18);
    }

    #[test]
    fn max_parallel_caps_the_operations_in_flight() {
        let t0 = Timestamp::now();
        let rollout = Rollout::new(limit(3), None, Waves::default(), None);
        let mut ops = batch(10, &rollout, t0);
        let mut run = run_of(rollout);
        assert_eq!(dispatched(&pass(&mut run, &mut ops, t0)), 3);
        assert_eq!(dispatched(&pass(&mut run, &mut ops, at(t0, 1))), 0);
        // Flashing and initializing still take their slots; the one that ended frees one.
        ops[1].step = UpgradeStep::Flashing;
        ops[2].step = UpgradeStep::Initializing;
        finish(&mut run, &mut ops[0], UpgradeStatus::Success);
        let next = pass(&mut run, &mut ops, at(t0, 2));
        assert_eq!(
            next,
            Decision::Admit {
                dispatch: vec![ops[3].id],
                wake: None
            }
        );
        let in_flight = ops
            .iter()
            .filter(|o| o.status == UpgradeStatus::InProgress && o.step != UpgradeStep::Queued)
            .count();
        assert_eq!(in_flight, 3);
    }

    #[test]
    fn the_rate_limit_holds_back_starts_beyond_the_budget_until_the_minute_passed() {
        let t0 = Timestamp::now();
        let rollout = Rollout::new(None, limit(5), Waves::default(), None);
        let mut ops = batch(8, &rollout, t0);
        let mut run = run_of(rollout);
        let first = pass(&mut run, &mut ops, t0);
        assert_eq!(
            first,
            Decision::Admit {
                dispatch: ops[..5].iter().map(|o| o.id).collect(),
                wake: Some(at(t0, 60)),
            }
        );
        // Even with every started one finished, the budget is spent for the minute.
        for op in &mut ops[..5] {
            finish(&mut run, op, UpgradeStatus::Success);
        }
        let held = pass(&mut run, &mut ops, at(t0, 59));
        assert_eq!(
            held,
            Decision::Admit {
                dispatch: Vec::new(),
                wake: Some(at(t0, 60))
            }
        );
        assert_eq!(dispatched(&pass(&mut run, &mut ops, at(t0, 60))), 3);
    }

    #[test]
    fn a_wall_clock_gone_back_does_not_hold_the_rate_limit_up() {
        let t0 = Timestamp::now();
        let rollout = Rollout::new(None, limit(1), Waves::default(), None);
        let mut ops = batch(2, &rollout, t0);
        let mut run = run_of(rollout);
        assert_eq!(dispatched(&pass(&mut run, &mut ops, t0)), 1);
        assert_eq!(dispatched(&pass(&mut run, &mut ops, at(t0, -3600))), 1);
    }

    #[test]
    fn the_abort_threshold_aborts_the_pending_operations_and_nothing_more_starts() {
        let t0 = Timestamp::now();
        let threshold = AbortThreshold::new(
            FailureRate::try_from(0.5).unwrap(),
            Limit::try_from(4i64).unwrap(),
        );
        let rollout = Rollout::new(limit(4), None, Waves::default(), Some(threshold));
        let mut ops = batch(10, &rollout, t0);
        let mut run = run_of(rollout);
        assert_eq!(dispatched(&pass(&mut run, &mut ops, t0)), 4);
        ops[3].step = UpgradeStep::Flashing;
        ops[3].progress = fleetmq_store::FLASHING_PROGRESS;
        finish(&mut run, &mut ops[0], UpgradeStatus::Failed);
        finish(&mut run, &mut ops[1], UpgradeStatus::Failed);
        finish(&mut run, &mut ops[2], UpgradeStatus::Success);
        // 2 of 3 failed, but 3 finished are below the sample of 4: go on.
        assert_eq!(dispatched(&pass(&mut run, &mut ops, at(t0, 1))), 3);
        finish(&mut run, &mut ops[4], UpgradeStatus::Success);
        // 2 of 4 = 50 %: abort everything that has not begun flashing.
        let abort = pass(&mut run, &mut ops, at(t0, 2));
        let Decision::Abort { operations, note } = abort else {
            panic!("expected an abort, got {abort:?}");
        };
        let pending: Vec<UpgradeId> = ops[5..].iter().map(|o| o.id).collect();
        assert_eq!(operations, pending, "the flashing one is left to finish");
        assert!(note.contains("2 of 4"), "{note}");
        assert_eq!(run.counts.aborted, 5);
        for op in ops.iter_mut().filter(|o| operations.contains(&o.id)) {
            op.finish(UpgradeStatus::Aborted, &note);
        }
        assert_eq!(dispatched(&pass(&mut run, &mut ops, at(t0, 3))), 0);
    }

    #[test]
    fn offline_devices_and_backoffs_wait_and_the_backoff_wakes_the_engine() {
        let t0 = Timestamp::now();
        let mut ops = batch(3, &Rollout::default(), t0);
        ops[1].not_before = Some(at(t0, 30));
        let mut online = all_online(&ops);
        online.remove(&ops[2].device);
        let refs: Vec<&UpgradeOperation> = ops.iter().collect();
        let decision = admit(&mut Run::unlimited(), &refs, &online, t0);
        assert_eq!(
            decision,
            Decision::Admit {
                dispatch: vec![ops[0].id],
                wake: Some(at(t0, 30))
            }
        );
    }
}
