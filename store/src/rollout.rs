//! How a batch is rolled out: at most so many devices upgrading at once, at most so many
//! started per minute, in waves of growing size, and stopped once too many fail.
//!
//! Each option is a validated newtype ([`Limit`], [`Waves`], [`FailureRate`]) built with
//! `TryFrom` at the edge (the API's batch body) and checked again whenever a stored batch is
//! decoded, so a [`Rollout`] that breaks a rule cannot exist and the rollout engine trusts it.
//! Their stored and serialized form is the plain number or list they wrap.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

/// Why a rollout option was refused; the text is what the API shows for the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// A limit (devices at once, starts per minute, sample size) below one.
    #[error("Ensure this value is greater than or equal to 1.")]
    BelowOne,
    /// A limit beyond 32 bits.
    #[error("Ensure this value is less than or equal to 4294967295.")]
    TooLarge,
    /// A wave that is not a whole percentage from 1 to 100.
    #[error("Each wave must be an integer from 1 to 100.")]
    WaveOutOfRange,
    /// Waves that do not grow: each wave is a cumulative share of the batch.
    #[error("Waves must be in strictly ascending order.")]
    WavesNotAscending,
    /// Waves that would leave part of the batch out.
    #[error("The last wave must be 100.")]
    LastWaveNot100,
    /// A failure rate of zero (every batch would stop at once) or above one.
    #[error("Ensure this value is greater than 0 and at most 1.")]
    FailureRateOutOfRange,
}

/// A positive count: devices upgrading at once, operations started per minute, finished
/// operations before an abort threshold counts. Zero would stall a batch forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Limit(NonZeroU32);

impl Limit {
    /// The count.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl TryFrom<u32> for Limit {
    type Error = RolloutError;

    fn try_from(n: u32) -> Result<Self, Self::Error> {
        NonZeroU32::new(n).map(Limit).ok_or(RolloutError::BelowOne)
    }
}

impl TryFrom<i64> for Limit {
    type Error = RolloutError;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        if n < 1 {
            return Err(RolloutError::BelowOne);
        }
        u32::try_from(n)
            .map_err(|_| RolloutError::TooLarge)
            .and_then(Limit::try_from)
    }
}

impl From<Limit> for u32 {
    fn from(limit: Limit) -> u32 {
        limit.get()
    }
}

/// Cumulative percentages of a batch per wave, strictly ascending from 1 to 100 and ending at
/// 100 (e.g. `[1, 10, 100]`: a 1 % canary, then up to 10 %, then the rest). Empty means one
/// wave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct Waves(Vec<u8>);

impl Waves {
    /// The percentages.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The wave of the `index`-th of `total` operations: every wave holds at least one.
    pub fn wave_of(&self, index: usize, total: usize) -> u32 {
        for (wave, percent) in self.0.iter().enumerate() {
            let end = (total * usize::from(*percent)).div_ceil(100).max(wave + 1);
            if index < end {
                return wave as u32;
            }
        }
        self.0.len().saturating_sub(1) as u32
    }
}

impl TryFrom<Vec<u64>> for Waves {
    type Error = RolloutError;

    fn try_from(percents: Vec<u64>) -> Result<Self, Self::Error> {
        let waves = percents
            .into_iter()
            .map(|p| {
                u8::try_from(p)
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or(RolloutError::WaveOutOfRange)
            })
            .collect::<Result<Vec<u8>, _>>()?;
        if waves.windows(2).any(|w| w[0] >= w[1]) {
            return Err(RolloutError::WavesNotAscending);
        }
        if waves.last().is_some_and(|last| *last != 100) {
            return Err(RolloutError::LastWaveNot100);
        }
        Ok(Waves(waves))
    }
}

impl TryFrom<Vec<u8>> for Waves {
    type Error = RolloutError;

    fn try_from(percents: Vec<u8>) -> Result<Self, Self::Error> {
        Waves::try_from(percents.into_iter().map(u64::from).collect::<Vec<_>>())
    }
}

impl From<Waves> for Vec<u8> {
    fn from(waves: Waves) -> Vec<u8> {
        waves.0
    }
}

/// The share of finished operations that failed at which a batch stops: above 0, at most 1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct FailureRate(f64);

impl FailureRate {
    /// The share, 0–1.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for FailureRate {
    type Error = RolloutError;

    fn try_from(rate: f64) -> Result<Self, Self::Error> {
        // NaN fails both comparisons.
        if rate > 0.0 && rate <= 1.0 {
            Ok(FailureRate(rate))
        } else {
            Err(RolloutError::FailureRateOutOfRange)
        }
    }
}

impl From<FailureRate> for f64 {
    fn from(rate: FailureRate) -> f64 {
        rate.get()
    }
}

/// Stop a batch once too many of its finished operations failed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AbortThreshold {
    failure_rate: FailureRate,
    min_sample: Limit,
}

impl AbortThreshold {
    /// Stop once at least `min_sample` operations finished and `failure_rate` of them failed.
    pub fn new(failure_rate: FailureRate, min_sample: Limit) -> Self {
        Self {
            failure_rate,
            min_sample,
        }
    }

    /// Failed share of finished operations at which the batch stops, 0–1.
    pub fn failure_rate(&self) -> f64 {
        self.failure_rate.get()
    }

    /// Finished operations needed before the rate counts: one early failure is no trend.
    pub fn min_sample(&self) -> u32 {
        self.min_sample.get()
    }
}

/// How a batch is rolled out. Every limit is optional; none means "all at once". Built only
/// from validated parts ([`Rollout::new`]), so the engine never meets a rollout it cannot run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    max_parallel: Option<Limit>,
    rate_per_minute: Option<Limit>,
    waves: Waves,
    abort_threshold: Option<AbortThreshold>,
}

impl Rollout {
    /// A rollout of validated options.
    pub fn new(
        max_parallel: Option<Limit>,
        rate_per_minute: Option<Limit>,
        waves: Waves,
        abort_threshold: Option<AbortThreshold>,
    ) -> Self {
        Self {
            max_parallel,
            rate_per_minute,
            waves,
            abort_threshold,
        }
    }

    /// At most this many devices upgrading at the same time.
    pub fn max_parallel(&self) -> Option<u32> {
        self.max_parallel.map(Limit::get)
    }

    /// At most this many operations started per minute.
    pub fn rate_per_minute(&self) -> Option<u32> {
        self.rate_per_minute.map(Limit::get)
    }

    /// Cumulative percentages per wave (empty: one wave). A wave starts once every operation
    /// of the previous ones finished.
    pub fn waves(&self) -> &[u8] {
        self.waves.as_slice()
    }

    /// Abort the batch past this failure rate.
    pub fn abort_threshold(&self) -> Option<AbortThreshold> {
        self.abort_threshold
    }

    /// The wave of the `index`-th of `total` operations.
    pub fn wave_of(&self, index: usize, total: usize) -> u32 {
        self.waves.wave_of(index, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_positive_32_bit_counts() {
        assert_eq!(Limit::try_from(0i64), Err(RolloutError::BelowOne));
        assert_eq!(Limit::try_from(-3i64), Err(RolloutError::BelowOne));
        assert_eq!(
            Limit::try_from(i64::from(u32::MAX) + 1),
            Err(RolloutError::TooLarge)
        );
        assert_eq!(Limit::try_from(4i64).map(Limit::get), Ok(4));
    }

    #[test]
    fn waves_ascend_from_1_to_100_and_end_at_100() {
        let waves = |p: &[u64]| Waves::try_from(p.to_vec());
        assert_eq!(waves(&[1, 10, 100]).map(|w| w.0), Ok(vec![1, 10, 100]));
        assert_eq!(waves(&[]), Ok(Waves::default()));
        assert_eq!(waves(&[0, 100]), Err(RolloutError::WaveOutOfRange));
        assert_eq!(waves(&[50, 300]), Err(RolloutError::WaveOutOfRange));
        assert_eq!(waves(&[50, 10]), Err(RolloutError::WavesNotAscending));
        assert_eq!(waves(&[50, 50, 100]), Err(RolloutError::WavesNotAscending));
        assert_eq!(waves(&[10, 50]), Err(RolloutError::LastWaveNot100));
    }

    #[test]
    fn every_wave_holds_at_least_one_operation() {
        let waves = Waves::try_from(vec![1u64, 10, 100]).unwrap();
        let of = |total| {
            (0..total)
                .map(|i| waves.wave_of(i, total))
                .collect::<Vec<_>>()
        };
        assert_eq!(of(3), vec![0, 1, 2]);
        assert_eq!(of(20), [vec![0], vec![1], vec![2; 18]].concat());
        assert_eq!(Waves::default().wave_of(5, 10), 0);
    }

    #[test]
    fn failure_rates_are_above_zero_and_at_most_one() {
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert_eq!(
                FailureRate::try_from(bad),
                Err(RolloutError::FailureRateOutOfRange)
            );
        }
        assert_eq!(FailureRate::try_from(1.0).map(FailureRate::get), Ok(1.0));
    }

    #[test]
    fn stored_rollouts_keep_their_form_and_invalid_ones_do_not_decode() {
        let stored = serde_json::json!({"max_parallel": 2, "rate_per_minute": null,
            "waves": [50, 100], "abort_threshold": {"failure_rate": 0.5, "min_sample": 4}});
        let rollout: Rollout = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(rollout.max_parallel(), Some(2));
        assert_eq!(rollout.rate_per_minute(), None);
        assert_eq!(rollout.waves(), &[50, 100]);
        assert_eq!(
            rollout
                .abort_threshold()
                .map(|t| (t.failure_rate(), t.min_sample())),
            Some((0.5, 4))
        );
        assert_eq!(serde_json::to_value(&rollout).unwrap(), stored);
        for broken in [
            serde_json::json!({"max_parallel": 0, "rate_per_minute": null, "waves": [],
                "abort_threshold": null}),
            serde_json::json!({"max_parallel": null, "rate_per_minute": null, "waves": [50, 10],
                "abort_threshold": null}),
            serde_json::json!({"max_parallel": null, "rate_per_minute": null, "waves": [],
                "abort_threshold": {"failure_rate": 2.0, "min_sample": 1}}),
        ] {
            assert!(serde_json::from_value::<Rollout>(broken).is_err());
        }
    }
}
