//! The `cooper` binary: parses arguments and hands each subcommand to the crate that owns it.
//! Each subcommand's arguments and wiring live in `cmd/<name>.rs`; no model, data or scoring logic
//! lives here.
mod cmd;

// Training allocates and frees tensors of tens to hundreds of MB every step; with the system
// allocator each one is a fresh mapping and page faults took half the step time. mimalloc, told to
// keep freed memory and to use large OS pages, reuses them (SFT step 7.0 s -> 3.2 s). Blocks too big
// for its size classes still went back to the OS on free unless they come from a reserved arena,
// so one is reserved up front (address space only; pages are committed when touched): 2.5 -> 1.4 s.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_e` enum of the mimalloc v3 that libmimalloc-sys
/// 0.1.49 bundles (the crate exports no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Address space reserved for mimalloc's arena; see the note at `GLOBAL`.
const RESERVED_ARENA_BYTES: usize = 8 << 30;

fn tune_allocator() {
    // Environment settings (MIMALLOC_PURGE_DELAY, MIMALLOC_ALLOW_LARGE_OS_PAGES) win.
    // SAFETY: plain option setters of mimalloc, called before any thread is spawned.
    unsafe {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
        if std::env::var_os("MIMALLOC_ALLOW_LARGE_OS_PAGES").is_none()
            && std::env::var_os("MIMALLOC_LARGE_OS_PAGES").is_none()
        {
            libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
        }
        if std::env::var_os("MIMALLOC_RESERVE_OS_MEMORY").is_none() {
            // A failed reservation (a small address space) only loses the speed-up.
            let _ = libmimalloc_sys::mi_reserve_os_memory_ex(
                RESERVED_ARENA_BYTES,
                false,
                true,
                false,
                std::ptr::null_mut(),
            );
        }
    }
}

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cooper",
    version,
    about = "COOPER: a unified model for cooperative perception and reasoning in spatial intelligence"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // Variants are added one per subcommand; keep them in the order of the README.
    /// Ask a spatial question about a picture; streams the reasoning and can write a trace folder.
    Ask(cmd::ask::AskArgs),
    /// Generate a depth map of a picture with the unified model (Spectral-coloured PNG).
    Depth(cmd::perceive::PerceiveArgs),
    /// Generate a segmentation map of a picture with the unified model.
    Segment(cmd::perceive::PerceiveArgs),
    /// Answer a VLMEvalKit-layout benchmark TSV and score it per category.
    Eval(cmd::eval::EvalArgs),
    /// Speed and memory of a model folder: load, prefill, decode, flow steps, peak RSS.
    Bench(cmd::bench::BenchArgs),
    /// Train a stage: tokenizer, ae, amg (stage 1), sft (stage 2a) or grpo (stage 2b).
    Train(cmd::train::TrainArgs),
    /// Write a randomly initialised model folder in the official checkpoint layout.
    Init(cmd::init::InitArgs),
    /// Run every reference case of a fixture folder and report max abs errors (exit 1 on failure).
    Parity(cmd::parity::ParityArgs),
    /// Depth metrics (AbsRel, δ1, …) of predicted depth PNGs against ground truth, after
    /// least-squares scale-and-shift alignment.
    EvalDepth(cmd::eval_depth::EvalDepthArgs),
    /// Segmentation mIoU and pixel accuracy of predicted maps against ground truth.
    EvalSeg(cmd::eval_seg::EvalSegArgs),
    /// Generate synthetic spatial scenes (RGB, exact depth and segmentation, questions, chains)
    /// in the stage-1, SFT, RL and evaluation formats.
    World(cmd::world::WorldArgs),
}

fn main() {
    tune_allocator();
    tracing_subscriber_init();
    if let Err(e) = run(Cli::parse()) {
        // The whole cause chain, without anyhow's backtrace dump.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ask(args) => cmd::ask::run(args),
        Command::Depth(args) => {
            cmd::perceive::run(args, cooper_infer::reasoning::tags::Tool::Depth)
        }
        Command::Segment(args) => {
            cmd::perceive::run(args, cooper_infer::reasoning::tags::Tool::Segmentation)
        }
        Command::Eval(args) => cmd::eval::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Init(args) => cmd::init::run(args),
        Command::Parity(args) => cmd::parity::run(args),
        Command::EvalDepth(args) => cmd::eval_depth::run(args),
        Command::EvalSeg(args) => cmd::eval_seg::run(args),
        Command::World(a) => cmd::world::run(a),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings).
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
