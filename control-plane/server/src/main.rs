//! `mtp-control-plane`: parses its configuration and runs until SIGINT/SIGTERM.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    mtp_control_plane::config::Args::parse().run()
}
