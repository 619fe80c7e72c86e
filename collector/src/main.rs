use clap::{Parser, Subcommand};
use dcwatt_collector::config::{CollectorConfig, DEFAULT_CONFIG};
use dcwatt_common::settings::EXIT_CONFIG;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// dcwatt collector: MQTT intake, live PUE per site, HTTP API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); `DCWATT__SECTION__KEY` environment variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit.
    CheckConfig,
    /// Print the commented default configuration.
    PrintDefaultConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::PrintDefaultConfig)) {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    // rumqttd logs ordinary client disconnects at ERROR; its internals stay quiet unless
    // asked for with RUST_LOG (e.g. RUST_LOG=info,rumqttd=warn).
    dcwatt_common::logging::init("info,rumqttd=off");
    let cfg = match CollectorConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(problems) => {
            eprint!("dcwatt-collector: {problems}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcwatt-collector: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    rt.spawn(shutdown_on_signal(cancel.clone()));
    let result = rt.block_on(dcwatt_collector::run::run(cfg, cancel));
    // The embedded broker's threads do not stop on their own; do not wait for them.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcwatt-collector: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_on_signal(cancel: CancellationToken) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    cancel.cancel();
}
