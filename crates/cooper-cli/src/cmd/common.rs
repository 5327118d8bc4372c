//! Flags shared by the subcommands that load a model.
use anyhow::{bail, Result};
use candle_core::{DType, Device};

/// `--device cpu | cuda | cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Ok(Device::new_cuda(i)?),
            _ => bail!("unknown device {other:?} (cpu, cuda, cuda:N)"),
        },
    }
}

/// `--dtype f32 | bf16 | f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => bail!("unknown dtype {other:?} (f32, bf16, f16)"),
    }
}

/// Device, dtype and model-folder flags of the subcommands that run the model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model folder in the official checkpoint layout (see `cooper init`); default: `$COOPER_MODEL`,
    /// else the embedded default model (unpacked once under `$COOPER_CACHE` or `~/.cache/cooper`).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    /// Loads the engine from `--model`, else from `$COOPER_MODEL`, else the embedded default.
    pub fn load(&self) -> Result<cooper_infer::Engine> {
        use anyhow::Context as _;
        let dir = match (&self.model, std::env::var_os("COOPER_MODEL")) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => d.into(),
            (None, None) => cooper_default::model_dir()?,
        };
        let device = parse_device(&self.device)?;
        let dtype = parse_dtype(&self.dtype)?;
        cooper_infer::Engine::load(&dir, &device, dtype)
            .with_context(|| format!("loading model folder {}", dir.display()))
    }
}
