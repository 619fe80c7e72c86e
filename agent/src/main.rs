use clap::{Parser, Subcommand};
use dcwatt_agent::{config::AgentConfig, run, scheduler, sources};
use dcwatt_common::settings::{self, EXIT_CONFIG};
use std::path::PathBuf;
use std::process::ExitCode;

/// dcwatt agent: reads power and load, publishes over MQTT.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML), default /etc/dcwatt/agent.toml when it exists;
    /// `DCWATT__KEY__SUBKEY` environment variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Directory for everything the agent writes (overrides `state_dir`).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
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
    let file = settings::config_file(cli.config.as_deref(), "/etc/dcwatt/agent.toml");
    let overrides = settings::cli_overrides(cli.state_dir.as_deref());
    match cli.command {
        Some(Command::Probe { json, sysfs_root }) => {
            let mut probes = sources::probe_all(&sysfs_root);
            // With a configuration, configured BMCs and facility devices are asked for
            // real, each in place of its type's generic line.
            if let Some(cfg) = file
                .as_deref()
                .and_then(|f| AgentConfig::load_with(Some(f), &overrides).ok())
            {
                let configured: Vec<_> = cfg
                    .sources
                    .iter()
                    .filter_map(sources::probe_configured)
                    .collect();
                probes.retain(|p| !configured.iter().any(|c| c.kind == p.kind));
                probes.extend(configured);
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
    let config = match AgentConfig::load_with(file.as_deref(), &overrides) {
        Ok(c) => c,
        Err(problems) => {
            eprint!("dcwatt-agent: {problems}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let warnings = config.warnings();
    if matches!(cli.command, Some(Command::CheckConfig)) {
        for w in &warnings {
            eprintln!("dcwatt-agent: warning: {w}");
        }
        println!(
            "configuration ok: site {} node {}, {} source(s)",
            config.site,
            config.node,
            config.sources.len()
        );
        return ExitCode::SUCCESS;
    }
    let log = dcwatt_common::logging::init(&config.log, "");
    for w in &warnings {
        tracing::warn!("{w}");
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
    rt.spawn(dcwatt_common::service::handle_signals(
        cancel.clone(),
        move || {
            dcwatt_common::service::reloading(|| {
                reload_log_level(file.as_deref(), &overrides, log.as_ref());
            });
        },
    ));
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

/// SIGHUP: the agent applies a new log level live; anything else needs a restart (its
/// sources, broker and identity are fixed for the life of the process), and it says so.
fn reload_log_level(
    file: Option<&std::path::Path>,
    overrides: &[(&str, String)],
    log: Option<&dcwatt_common::logging::LogHandle>,
) {
    match AgentConfig::load_with(file, overrides) {
        Ok(c) => {
            if let Some(h) = log {
                h.apply_level(&c.log.level);
            }
            tracing::info!(
                level = %c.log.level,
                "configuration reloaded: log level applied; other changes need a restart of the agent"
            );
        }
        Err(p) => tracing::error!(
            problems = %p.to_string().trim_end(),
            "configuration not reloaded: it has problems; the running configuration stays"
        ),
    }
}
