//! `segnode-phantom`: write a synthetic chest CT or temporal-bone CBCT series with its ground truth and
//! print one JSON line describing it. For tests, benchmarks and trying segnode out; not part of the node.

use clap::Parser;
use segnode_phantom::cli::{run, PhantomCli};

fn main() -> anyhow::Result<()> {
    let cli = PhantomCli::parse();
    match run(&cli.args) {
        Ok(summary) => {
            println!("{summary}");
            Ok(())
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "status": "error", "error": format!("{e:#}") })
            );
            Err(e)
        }
    }
}
