use clap::{Parser, Subcommand};
use dcwatt_agent::{config::AgentConfig, run, scheduler, sources};
use dcwatt_common::settings::EXIT_CONFIG;
use std::path::PathBuf;
use std::process::ExitCode;

/// dcwatt agent: reads power and load, publishes over MQTT.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); `DCWATT__KEY__SUBKEY` environment variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Read every source once, print the batch as JSON and exit (no broker needed).
    #[arg(long)]
    once: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List the sources this build knows, whether each can read on this host, and why not.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Root of sysfs to look in (for inspecting a copied tree).
        #[arg(long, default_value = "/sys")]
        sysfs_root: PathBuf,
    },
    /// Validate the configuration and exit.
    CheckConfig,
    /// Print the commented default configuration.
    PrintDefaultConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    dcwatt_common::logging::init("info");
    match cli.command {
        Some(Command::Probe { json, sysfs_root }) => {
            let mut probes = sources::probe_all(&sysfs_root);
            // With a configuration, configured BMCs are asked for real.
            if let Some(cfg) = cli
                .config
                .as_deref()
                .and_then(|f| AgentConfig::load(Some(f)).ok())
            {
                let configured: Vec<_> = cfg
                    .sources
                    .iter()
                    .filter_map(|s| match s {
                        sources::SourceConfig::Redfish(r) => {
                            Some(sources::redfish::probe_configured(r))
                        }
                        _ => None,
                    })
                    .collect();
                if !configured.is_empty() {
                    probes.retain(|p| p.kind != sources::redfish::KIND);
                    probes.extend(configured);
                }
            }
            if json {
                match serde_json::to_string_pretty(&probes) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("dcwatt-agent: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                println!("{:<10} {:<12} DETAIL", "SOURCE", "STATUS");
                for p in probes {
                    let status = if p.available {
                        "available"
                    } else {
                        "unavailable"
                    };
                    println!("{:<10} {:<12} {}", p.kind, status, p.detail);
                }
            }
            return ExitCode::SUCCESS;
        }
        Some(Command::PrintDefaultConfig) => {
            print!("{}", dcwatt_agent::config::DEFAULT_CONFIG);
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config = match AgentConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(problems) => {
            eprint!("dcwatt-agent: {problems}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        println!(
            "configuration ok: site {} node {}, {} source(s)",
            config.site,
            config.node,
            config.sources.len()
        );
        return ExitCode::SUCCESS;
    }
    if cli.once {
        return once(&config);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcwatt-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    rt.spawn(shutdown_on_signal(cancel.clone()));
    match rt.block_on(run::run(config, cancel)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcwatt-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn once(config: &AgentConfig) -> ExitCode {
    let mut sources = match run::build_sources(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dcwatt-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    // CPU utilization is a difference between two samples.
    std::thread::sleep(std::time::Duration::from_millis(250));
    let now = dcwatt_common::now_ms();
    let (readings, errors) = scheduler::sample(&mut sources, 0, now, &config.whole_system_order);
    for (kind, e) in &errors {
        eprintln!("dcwatt-agent: source {kind}: {e}");
    }
    let batch = scheduler::batch(&config.site, &config.node, 1, now, readings);
    match serde_json::to_string_pretty(&batch) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("dcwatt-agent: {e}");
            return ExitCode::FAILURE;
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn shutdown_on_signal(cancel: tokio_util::sync::CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    cancel.cancel();
}
