//! The `scaigrid` binary: parse the command line, load the configuration once, dispatch.

use clap::Parser;
use scaigrid::cli::{Cli, Command};
use scaigrid::config::Config;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The phonemizer child needs no configuration, runtime or logging: it answers on its
    // pipes until they close.
    if let Command::Phonemizer = cli.command {
        return match engines::phonemizer::serve_stdio() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("scaigrid phonemizer: {error}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // The code table needs nothing either.
    if let Command::Errors = cli.command {
        print!("{}", scaigrid::error::errors_markdown());
        return std::process::ExitCode::SUCCESS;
    }
    if let Command::Permissions = cli.command {
        print!("{}", scaigrid::rbac::permissions_markdown());
        return std::process::ExitCode::SUCCESS;
    }
    // The command-line client needs the server's URL and a key, not this machine's
    // configuration or logs.
    if let Command::Transcribe(_) | Command::Speak(_) = cli.command {
        return client(cli.command);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("scaigrid: starting the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

/// `scaigrid transcribe` and `scaigrid speak`: exit 0 when everything succeeded, 1
/// when some file failed or the server refused.
fn client(command: Command) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("scaigrid: starting the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Transcribe(args) => scaigrid::client::transcribe::run(args).await,
            Command::Speak(args) => scaigrid::client::speak::run(args).await.map(|()| true),
            _ => Ok(true),
        }
    });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("scaigrid: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let config = match Config::load(cli.config.as_deref(), &cli.overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("scaigrid: configuration error: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let role = match cli.command {
        Command::Serve => Some("serve"),
        Command::Worker => Some("worker"),
        Command::Node(_) => Some("node"),
        _ => None,
    };
    let traces = scaigrid::telemetry::init_logging(config.log_format, role);
    let result = match cli.command {
        Command::Serve => scaigrid::server::serve(config).await,
        Command::Worker => scaigrid::worker::run(config).await,
        Command::Node(args) => match args.options(&config) {
            Ok(options) => {
                let shutdown = scaigrid::server::shutdown_signal();
                scaigrid::inference::serve::run(options, shutdown).await
            }
            Err(error) => Err(error),
        },
        Command::Migrate => scaigrid::db::migrate::run_standalone(&config.database).await,
        Command::Admin { command } => scaigrid::cli::admin(config, command).await,
        Command::Phonemizer
        | Command::Errors
        | Command::Permissions
        | Command::Transcribe(_)
        | Command::Speak(_) => Ok(()),
    };
    traces.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("scaigrid: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
