//! `cooper parity`: run every reference case of a fixture folder and report max abs errors.
use std::path::PathBuf;

use anyhow::{bail, Result};
use cooper_model::parity::{run_all, CaseOutcome, FixtureSet};

#[derive(clap::Args)]
pub struct ParityArgs {
    /// A folder in the fixture layout: model files plus `cases/*.safetensors` + `*.json`.
    dir: PathBuf,
}

pub fn run(args: ParityArgs) -> Result<()> {
    let set = FixtureSet::open(&args.dir)?;
    let runners = cooper_infer::parity::all_runners();
    let results = run_all(&set, &runners)?;
    let mut failed = 0;
    for (name, outcome) in &results {
        match outcome {
            CaseOutcome::Checked(checks) => {
                let worst = checks
                    .iter()
                    .filter(|c| c.tolerance > 0.0 && c.tolerance < 1.0)
                    .map(|c| c.max_abs_err)
                    .fold(0f32, f32::max);
                let verdict = if outcome.is_failure() { "FAIL" } else { "PASS" };
                println!(
                    "{verdict} {name:<16} {} tensors, worst float error {worst:.2e}",
                    checks.len()
                );
                for c in checks {
                    let mark = if c.pass() { " " } else { "!" };
                    println!(
                        "   {mark} {:<34} max abs err {:.3e} (tol {:.0e})",
                        c.name, c.max_abs_err, c.tolerance
                    );
                }
            }
            CaseOutcome::Skipped(why) => println!("SKIP {name:<16} {why}"),
            CaseOutcome::Failed(why) => println!("FAIL {name:<16} {why}"),
        }
        if outcome.is_failure() {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} cases failed", results.len());
    }
    Ok(())
}
