//! service: what both binaries do as a system service — stop on SIGTERM/SIGINT, reload on
//! SIGHUP, and tell the service manager (systemd `Type=notify`) when they are ready, that
//! they are alive (watchdog), and when they stop. Outside systemd every notification is a
//! no-op, so the same binary runs by hand, in a container or under a test harness.
//!
//! Must not: decide what a reload changes (each binary passes its own), or exit the
//! process (shutdown is the caller's, through the token).

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Tells the service manager that start-up is done (`READY=1`), with a status line.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells the service manager that the process is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Waits for signals until `cancel`: SIGTERM and SIGINT cancel `cancel` (a clean shutdown);
/// each SIGHUP runs `reload`, so a reload never kills the process (`reload` wraps its work
/// in [`reloading`]). A signal that cannot be installed is logged and the others still work.
pub async fn handle_signals<F: FnMut()>(cancel: CancellationToken, mut reload: F) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| tracing::error!(error = %e, "cannot handle SIGTERM"))
        .ok();
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| tracing::error!(error = %e, "cannot handle SIGHUP; it would stop the process"))
        .ok();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tokio::signal::ctrl_c() => break,
            Some(()) = recv(&mut term) => break,
            Some(()) = recv(&mut hup) => {
                tracing::info!("SIGHUP: reloading the configuration");
                reload();
            }
        }
    }
    tracing::info!("shutting down");
    notify_stopping();
    cancel.cancel();
}

/// Runs `f` between `RELOADING=1` and `READY=1`, so that the service manager sees the
/// reload until it is applied.
pub fn reloading<T>(f: impl FnOnce() -> T) -> T {
    notify_reloading();
    let out = f();
    notify(&[sd_notify::NotifyState::Ready]);
    out
}

/// [`reloading`] for work that waits: `READY=1` follows once `f` is done.
pub async fn reloading_async<T>(f: impl Future<Output = T>) -> T {
    notify_reloading();
    let out = f.await;
    notify(&[sd_notify::NotifyState::Ready]);
    out
}

fn notify_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    states.extend(monotonic());
    notify(&states);
}

/// `MONOTONIC_USEC=` for `RELOADING=1` (systemd's `Type=notify-reload` wants it), when the
/// clock can be read.
fn monotonic() -> Vec<sd_notify::NotifyState<'static>> {
    sd_notify::NotifyState::monotonic_usec_now()
        .map(|m| vec![m])
        .unwrap_or_default()
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Pings the systemd watchdog (`WATCHDOG=1`) at half its interval while `healthy` says so,
/// until `cancel`. Without `WATCHDOG_USEC` (not under systemd, or no `WatchdogSec=`) it
/// returns at once. `healthy` should prove that the process does its work (e.g. that the
/// engine's lock can be taken), not only that the runtime runs: a missed ping makes systemd
/// restart the service.
pub async fn watchdog<H, Fut>(cancel: CancellationToken, mut healthy: H)
where
    H: FnMut(Duration) -> Fut,
    Fut: Future<Output = bool>,
{
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog on"
    );
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                if healthy(every).await {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::error!("unhealthy: withholding the watchdog ping; systemd will restart the service");
                }
            }
        }
    }
}
