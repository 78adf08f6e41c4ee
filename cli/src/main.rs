//! Entry point of `mtp`: parse, run on a small runtime, print the error the
//! way the user asked for and exit with its class's code.

use clap::Parser;
use mtp_cli::output::Format;

fn main() {
    // Both ring and aws-lc may be linked through dependencies; pick one
    // explicitly or rustls panics on first TLS use. An error only means a
    // provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let cli = mtp_cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(mtp_cli::errors::exit::OTHER);
        }
    };
    let (format, result) = runtime.block_on(mtp_cli::run(cli));
    if let Err(err) = result {
        match format {
            Format::Json => eprintln!("{}", err.render_json()),
            Format::Table | Format::Csv => eprintln!("{}", err.render_human()),
        }
        std::process::exit(err.exit_code());
    }
}
