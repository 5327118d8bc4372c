//! The embedded default model: a small COOPER trained end to end on the synthetic world by
//! `scripts/train-default.sh` (see `docs/results.md`), shipped inside the binary so that
//! `cooper ask` works without a download.
//!
//! The files are compiled in with `include_bytes!` and written, on first use, to a cache folder
//! named after their fingerprint, so that a new build with other weights never reads stale files.
//! The folder is built under a temporary name and renamed into place, so a killed first run leaves
//! nothing half-written behind.
use std::path::{Path, PathBuf};

/// One embedded file of `../model/`, by name.
macro_rules! model_file {
    ($name:literal) => {
        ($name, include_bytes!(concat!("../model/", $name)) as &[u8])
    };
}

/// The model folder's files, in the official checkpoint layout.
const FILES: &[(&str, &[u8])] = &[
    model_file!("llm_config.json"),
    model_file!("vit_config.json"),
    model_file!("ae_config.json"),
    model_file!("bagel_config.json"),
    model_file!("special_tokens.json"),
    model_file!("tokenizer.json"),
    model_file!("model.safetensors"),
    model_file!("ae.safetensors"),
    // Trained describe-first and without the system prompts: asked the same way.
    model_file!("reasoning_config.json"),
];

/// Environment variable naming the cache root (default: `$XDG_CACHE_HOME/cooper`, then
/// `$HOME/.cache/cooper`, then the system temp folder).
pub const CACHE_ENV: &str = "COOPER_CACHE";

#[derive(Debug, thiserror::Error)]
pub enum DefaultModelError {
    #[error("unpacking the embedded default model to {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Total size of the embedded files in bytes.
pub fn embedded_bytes() -> usize {
    FILES.iter().map(|(_, b)| b.len()).sum()
}

/// 64-bit FNV-1a over every file name and content. A content fingerprint for a cache folder name,
/// not a security check, which is why a five-line hash is enough and no hashing crate is pulled in.
pub fn fingerprint() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, bytes) in FILES {
        for &b in name.as_bytes().iter().chain(*bytes) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn cache_root() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var(CACHE_ENV)
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("cooper")))
        .or_else(|| var("HOME").map(|p| p.join(".cache").join("cooper")))
        .unwrap_or_else(|| std::env::temp_dir().join("cooper"))
}

/// The default model's folder, unpacked under the cache root if it is not there yet.
pub fn model_dir() -> Result<PathBuf, DefaultModelError> {
    model_dir_in(&cache_root())
}

/// As [`model_dir`], under `root`.
pub fn model_dir_in(root: &Path) -> Result<PathBuf, DefaultModelError> {
    let fingerprint = fingerprint();
    let dir = root.join(format!("default-{fingerprint:016x}"));
    if dir.is_dir() {
        return Ok(dir);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DefaultModelError::Io { path, source }
    };
    std::fs::create_dir_all(root).map_err(io(root))?;
    let tmp = root.join(format!(
        ".default-{fingerprint:016x}.tmp-{}",
        std::process::id()
    ));
    let result = (|| {
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for (name, bytes) in FILES {
            let path = tmp.join(name);
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(()),
            // Another process unpacked it first: theirs is as good as ours.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => Err(io(&dir)(e)),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_once_and_completely() {
        let root = tempfile::tempdir().unwrap();
        let dir = model_dir_in(root.path()).unwrap();
        for (name, bytes) in FILES {
            assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
        }
        // A second call reuses the folder; no temporary folder is left behind.
        assert_eq!(model_dir_in(root.path()).unwrap(), dir);
        let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    /// Re-embedding copies a run's model folder into `../model/`; a file there that `FILES` does
    /// not list (a `reasoning_config.json`, say) would silently not ship, and the default model
    /// would be asked differently from how it was trained.
    #[test]
    fn embeds_every_file_of_the_model_folder() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("model");
        for entry in std::fs::read_dir(&folder).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                FILES.iter().any(|(n, _)| *n == name),
                "{name} is in {} but not in FILES",
                folder.display()
            );
        }
    }

    #[test]
    fn fits_the_size_budget() {
        // Issue 6: at most 25 MB embedded.
        assert!(embedded_bytes() <= 25_000_000, "{} bytes", embedded_bytes());
    }
}
