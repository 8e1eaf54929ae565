//! The progress bars a run draws on the terminal: one style for every phase, so the
//! fleet run and the upgrade demo look alike.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// A bar for one phase (`connecting`, `running`, `overall`…), added to `bars` so phases
/// stack instead of overwriting each other.
pub fn bar(bars: &MultiProgress, len: u64, what: &str) -> ProgressBar {
    let bar = bars.add(ProgressBar::new(len));
    let style = ProgressStyle::with_template(&format!(
        "{what:>12} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {{per_sec}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
