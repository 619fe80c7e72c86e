use clap::{Parser, Subcommand};
use dcwatt_collector::config::reload;
use dcwatt_collector::config::{CollectorConfig, DEFAULT_CONFIG};
use dcwatt_collector::run;
use dcwatt_common::settings::{self, Loader, EXIT_CONFIG};
use std::path::PathBuf;
use std::process::ExitCode;

/// dcwatt collector: MQTT intake, live PUE per site, HTTP API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML), default /etc/dcwatt/collector.toml when it exists;
    /// `DCWATT__SECTION__KEY` environment variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Directory for everything the collector writes (overrides `state_dir`).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration (and every file it names) and exit.
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
    let file = settings::config_file(cli.config.as_deref(), "/etc/dcwatt/collector.toml");
    let overrides = settings::cli_overrides(cli.state_dir.as_deref());
    let loaded = Loader::with_overrides(file.as_deref(), &overrides)
        .and_then(|l| CollectorConfig::from_loader(&l).map(|c| (c, reload::sections(&l))));
    let (cfg, applied) = match loaded {
        Ok(c) => c,
        Err(problems) => {
            eprint!("dcwatt-collector: {problems}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        println!("configuration ok (state in {})", cfg.state_dir.display());
        return ExitCode::SUCCESS;
    }
    // rumqttd logs ordinary client disconnects at ERROR; its internals stay quiet unless
    // asked for with RUST_LOG (e.g. RUST_LOG=info,rumqttd=warn).
    let log = dcwatt_common::logging::init(&cfg.log, "rumqttd=off");
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
    let cancel = tokio_util::sync::CancellationToken::new();
    let (tx, requests) = tokio::sync::mpsc::channel(1);
    let reloads = run::Reloads {
        requests,
        source: reload::Source {
            file,
            overrides,
            applied,
        },
        log,
    };
    rt.spawn(dcwatt_common::service::handle_signals(
        cancel.clone(),
        move || {
            let _ = tx.try_send(());
        },
    ));
    let result = rt.block_on(run::run(cfg, cancel, Some(reloads)));
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
