//! The `upgrade-demo`: the fleet up, a firmware build uploaded through the
//! firmware-upgrader REST API, one batch upgrade watched live until it ends, then a
//! [`DemoSummary`] and optionally its JSON report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::firmware::{BatchDetail, IMAGE_TYPE, Rollout, StatusCounts};
use crate::progress::bar;
use crate::registration::ApiClient;
use crate::report::{DemoSummary, Timing, memory_kib};
use crate::run::{RunOptions, credentials, device_configs};
use crate::update::firmware_image;
use crate::{Fleet, FleetOptions};

/// What the `upgrade-demo` subcommand is told besides the fleet's [`RunOptions`]: the
/// build to upload, how the batch rolls out, and how it is watched and reported.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Size of the firmware image in bytes.
    pub image_size: usize,
    /// Version of the new build (`None`: `2.0.<unix time>`).
    pub build_version: Option<String>,
    /// Name of the firmware category to create (a unique suffix is added).
    pub category: String,
    /// How the batch upgrade rolls out.
    pub rollout: Rollout,
    /// Stop watching the batch after this long.
    pub watch_timeout: Duration,
    /// How often the batch detail is read.
    pub poll_interval: Duration,
    /// Where to write the JSON report, if anywhere.
    pub report: Option<PathBuf>,
}

/// The `upgrade-demo` subcommand: fleet up, firmware build up, one batch upgrade watched
/// until it ends, a summary.
pub async fn upgrade_demo(
    options: &RunOptions,
    demo: &DemoOptions,
    bars: &MultiProgress,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let token = options
        .token
        .as_deref()
        .context("upgrade-demo needs --token (or FLEETMQ_TOKEN)")?;
    let api = ApiClient::new(&options.api, token);
    let org = api
        .organization_id(&options.org)
        .await
        .context("looking up the organization")?;

    let credentials = credentials(options, bars).await?;
    let configs = device_configs(options, &credentials)?;
    let devices = configs.len();
    let faults = options.faults;
    let offline = faults
        .assign(devices)
        .iter()
        .filter(|f| matches!(f, Some(crate::Fault::Offline { .. })))
        .count();
    let fleet = Fleet::spawn(
        configs,
        FleetOptions {
            connect_rate: Some(options.connect_rate),
            max_pending_connects: Some(options.max_pending_connects),
            faults,
            mqtt5_fraction: options.mqtt5_fraction,
        },
    );

    // The devices that are meant to be online, online (the --fault-offline ones join later,
    // during the rollout).
    let connect_started = Instant::now();
    let expected = (devices - offline) as u64;
    let connecting = bar(bars, expected, "connecting");
    let stats = Arc::clone(fleet.stats());
    let all = stats.wait_until(|s| s.connected_now >= expected);
    tokio::pin!(all);
    let deadline = tokio::time::sleep(options.connect_timeout);
    tokio::pin!(deadline);
    let mut refresh = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = &mut all => break,
            () = &mut deadline => {
                connecting.abandon_with_message("not all devices connected; upgrading anyway");
                break;
            }
            _ = refresh.tick() => connecting.set_position(stats.snapshot().connected_now),
        }
    }
    connecting.set_position(stats.snapshot().connected_now);
    connecting.finish();
    let connect_phase = connect_started.elapsed();
    let connected = stats.snapshot().connected_now;

    let run = time::OffsetDateTime::now_utc().unix_timestamp();
    let version = demo
        .build_version
        .clone()
        .unwrap_or_else(|| format!("2.0.{run}"));
    let result = async {
        let category = api
            .create_category(org, &format!("{} {run}", demo.category))
            .await
            .context("creating the firmware category")?;
        let build = api
            .create_build(
                &category,
                &version,
                "OpenWrt 23.05 fleetmq-sim",
                "Simulated firmware uploaded by fleetmq-sim upgrade-demo.",
            )
            .await
            .context("creating the build")?;
        let image = firmware_image(&version, demo.image_size, run as u64);
        api.upload_image(&build, IMAGE_TYPE, image)
            .await
            .context("uploading the image")?;
        let posted = Instant::now();
        let batch = api
            .start_batch(&build, &demo.rollout)
            .await
            .context("starting the batch upgrade")?;
        let created = Instant::now();
        eprintln!("build {version} ({build}), batch {batch}");
        let watched = watch_batch(
            &api,
            batch,
            devices as u64,
            demo.watch_timeout,
            demo.poll_interval,
            &stats,
            bars,
        )
        .await?;
        anyhow::Ok((batch, posted, created, watched))
    }
    .await;
    // Measured before stopping: stopping devices changes nothing here, but keep it exact.
    let upgrades = stats.upgrades().snapshot();
    let memory = memory_kib();

    let stopping = bars.add(ProgressBar::new_spinner());
    stopping.set_message(format!("stopping {devices} devices"));
    stopping.enable_steady_tick(Duration::from_millis(200));
    fleet.stop().await;
    stopping.finish_and_clear();

    let (batch, posted, created, watched) = result?;
    let timing = Timing::new(
        stats.upgrades().epoch(),
        posted,
        created,
        watched.finished_at,
        upgrades,
    );
    let summary = DemoSummary {
        version,
        devices,
        connected,
        connect_phase,
        detail: watched.detail,
        rollout_time: watched.watched_for,
        total_time: started.elapsed(),
        reboots: stats.snapshot().reboots,
        timing,
        memory,
    };
    print!("{summary}");
    if let Some(path) = &demo.report {
        let report = summary.report(batch, demo);
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// What `watch_batch` saw.
struct Watched {
    /// The last detail read.
    detail: BatchDetail,
    /// How long it watched.
    watched_for: Duration,
    /// When the answer that first showed the batch ended arrived (`None`: it did not end).
    finished_at: Option<Instant>,
}

/// Polls the batch every 500 ms, one bar per status plus the overall one, until it ends,
/// Ctrl-C, or `limit`. Returns the last detail and how long it was watched.
async fn watch_batch(
    api: &ApiClient,
    batch: uuid::Uuid,
    devices: u64,
    limit: Duration,
    every: Duration,
    stats: &crate::Stats,
    bars: &MultiProgress,
) -> anyhow::Result<Watched> {
    let started = Instant::now();
    let overall = bar(bars, devices, "overall");
    let status_bars: Vec<(&str, ProgressBar)> =
        ["success", "failed", "aborted", "cancelled", "in-progress"]
            .into_iter()
            .map(|status| {
                let b = bars.add(ProgressBar::new(devices));
                let style = ProgressStyle::with_template(&format!(
                    "{status:>12} {{wide_bar}} {{pos}}/{{len}} {{msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                b.set_style(style);
                (status, b)
            })
            .collect();
    let count = |counts: &StatusCounts, status: &str| match status {
        "success" => counts.success,
        "failed" => counts.failed,
        "aborted" => counts.aborted,
        "cancelled" => counts.cancelled,
        _ => counts.in_progress,
    };
    let mut poll = tokio::time::interval(every.max(Duration::from_millis(10)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut last: Option<BatchDetail> = None;
    let mut finished_at = None;
    let mut errors = 0;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = &mut ctrl_c => break,
            () = &mut deadline => break,
        }
        let detail = match api.batch(batch).await {
            Ok(detail) => {
                errors = 0;
                detail
            }
            // A few failed polls (a restarting server) are tolerated.
            Err(e) if errors < 10 => {
                errors += 1;
                overall.set_message(format!("poll failed: {e}"));
                continue;
            }
            Err(e) => return Err(e).context("polling the batch"),
        };
        let total = detail.total.max(1);
        overall.set_length(total);
        overall.set_position(detail.status_counts.finished());
        let upgrades = stats.upgrades().snapshot();
        overall.set_message(format!(
            "{} ({}) fetched {} back on new firmware {}",
            detail.status, detail.progress_report, upgrades.first_fetches, upgrades.installed
        ));
        for (status, b) in &status_bars {
            b.set_length(total);
            b.set_position(count(&detail.status_counts, status));
        }
        let finished = detail.is_finished();
        last = Some(detail);
        if finished {
            finished_at = Some(Instant::now());
            break;
        }
    }
    overall.finish();
    for (_, b) in &status_bars {
        b.finish();
    }
    let detail = last.context("the batch detail was never read")?;
    Ok(Watched {
        detail,
        watched_for: started.elapsed(),
        finished_at,
    })
}
