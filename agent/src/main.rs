//! Entry point of `mtp-agent`: flags and `MTP_AGENT_*` variables (see
//! `config`), then the agent until a signal.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // Pick ring explicitly: with both ring and aws-lc linked, rustls panics otherwise.
    let _ = rustls::crypto::ring::default_provider().install_default();
    mtp_agent::config::Args::parse().run()
}
