//! The tuner's cache: the configuration it chose for a device, one JSON file
//! per device key in the user's cache directory (`$XDG_CACHE_HOME/hopfield-gpu/`
//! on Linux, the platform's equivalent elsewhere, as the `dirs` crate
//! finds it).
//!
//! The key is everything that can change which configuration is best or
//! whether it still runs: backend, vendor, device, adapter name, driver,
//! wgpu version, and a hash of every kernel's source. A changed kernel
//! (another hash) or driver finds no entry and runs the defaults until it is
//! tuned again; old files are left alone (they are a few hundred bytes).
//! `HOPFIELD_TUNE` controls the cache ([`TuneMode`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KernelConfig;
use crate::error::{Error, Result};

/// What identifies a device and the kernels a tuned configuration was measured on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// "Vulkan", "Metal", "Dx12", ...
    pub backend: String,
    /// PCI vendor id.
    pub vendor: u32,
    /// PCI device id.
    pub device: u32,
    /// Adapter name.
    pub name: String,
    /// Driver name and version.
    pub driver: String,
    /// The wgpu release the library was built with.
    pub wgpu: String,
    /// Hash of every kernel module's source (hex).
    pub shaders: String,
}

impl CacheKey {
    /// The entry's file name: a hash of the whole key, so that any change
    /// (a new kernel source, a driver update) finds no file.
    pub fn file_name(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        // FNV-1a: stable across Rust releases, enough for a file name (the
        // key itself is stored in the file and compared on load).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("tuned-{hash:016x}.json")
    }
}

/// One cached choice.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The device and kernels it was measured on.
    pub key: CacheKey,
    /// The configuration the tuner chose.
    pub config: KernelConfig,
    /// The tuner's measurements, for `hopfield-gpu tune` to show again.
    pub report: serde_json::Value,
}

/// How the tuner's cache is used (`HOPFIELD_TUNE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneMode {
    /// Unset (or `cache`): a context uses the cached configuration of its
    /// device when there is one, else the defaults table; tuning measures
    /// only when nothing is cached.
    Cache,
    /// `off`: the defaults table only; the cache is neither read nor written.
    Off,
    /// `force`: contexts ignore the cache (defaults until tuned), and tuning
    /// measures again and overwrites the entry.
    Force,
}

impl TuneMode {
    /// The mode `HOPFIELD_TUNE` asks for; an unknown value is an error naming it.
    pub fn from_env() -> Result<TuneMode> {
        match std::env::var("HOPFIELD_TUNE") {
            Err(_) => Ok(TuneMode::Cache),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "cache" | "on" => Ok(TuneMode::Cache),
                "off" => Ok(TuneMode::Off),
                "force" => Ok(TuneMode::Force),
                _ => Err(Error::invalid("HOPFIELD_TUNE", &v, "use off, force or cache (the default)")),
            },
        }
    }
}

/// The user's cache directory for hopfield-gpu, if the platform has one.
pub fn default_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("hopfield-gpu"))
}

/// The cached entry for `key` in `dir`, if there is one and it is for this
/// key (a file that does not parse, or holds another key, counts as none).
pub fn load(dir: &Path, key: &CacheKey) -> Option<CacheEntry> {
    let text = std::fs::read_to_string(dir.join(key.file_name())).ok()?;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    (entry.key == *key).then_some(entry)
}

/// Write `entry` to `dir` atomically (a temporary file renamed over the
/// entry), creating the directory. Returns the file's path.
pub fn store(dir: &Path, entry: &CacheEntry) -> Result<PathBuf> {
    let io = |path: &Path, source| Error::Io { path: path.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join(entry.key.file_name());
    let tmp = dir.join(format!(".{}.{}.tmp", entry.key.file_name(), std::process::id()));
    let text = serde_json::to_string_pretty(entry).map_err(|e| Error::internal(format!("a cache entry: {e}")))?;
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            backend: "Vulkan".into(),
            vendor: 0x10de,
            device: 0x2335,
            name: "NVIDIA H200".into(),
            driver: "NVIDIA 570".into(),
            wgpu: "30.0.1".into(),
            shaders: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn an_entry_is_found_for_its_key_and_lost_when_the_shaders_change() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), &key()).is_none(), "an empty cache has no entry");
        let entry = CacheEntry { key: key(), config: KernelConfig::legacy(), report: serde_json::json!({"x": 1}) };
        let path = store(dir.path(), &entry).unwrap();
        assert!(path.starts_with(dir.path()));
        let hit = load(dir.path(), &key()).expect("a hit");
        assert_eq!(hit.config, KernelConfig::legacy());
        // Another shader hash (an edited kernel) or driver: no entry.
        assert!(load(dir.path(), &CacheKey { shaders: "fedcba9876543210".into(), ..key() }).is_none());
        assert!(load(dir.path(), &CacheKey { driver: "NVIDIA 575".into(), ..key() }).is_none());
        // A file that is not an entry counts as none.
        std::fs::write(dir.path().join(key().file_name()), "not json").unwrap();
        assert!(load(dir.path(), &key()).is_none());
    }
}
