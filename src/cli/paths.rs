//! The files a run names, checked before any work so that a typo in an
//! output path does not cost the whole computation: every output's
//! directory exists and takes new files, no output is a directory, no two
//! outputs are the same file, and no output is one of the inputs (which a
//! run would overwrite while, or after, reading it).

use std::path::{Path, PathBuf};

use super::CliError;

/// A file named by a flag.
#[derive(Clone, Copy, Debug)]
pub struct Named<'a> {
    /// The flag, as typed (`--out`).
    pub flag: &'static str,
    /// The path given.
    pub path: &'a Path,
}

impl<'a> Named<'a> {
    /// The file of an optional flag, if given.
    pub fn opt(flag: &'static str, path: &'a Option<PathBuf>) -> Option<Named<'a>> {
        path.as_deref().map(|path| Named { flag, path })
    }
}

/// Check the outputs against each other and the inputs, and that each can
/// be written. Outputs that are `None` were not asked for.
pub fn check(outputs: &[Option<Named<'_>>], inputs: &[Option<Named<'_>>]) -> Result<(), CliError> {
    let outputs: Vec<Named<'_>> = outputs.iter().flatten().copied().collect();
    let inputs: Vec<Named<'_>> = inputs.iter().flatten().copied().collect();
    for (i, out) in outputs.iter().enumerate() {
        for earlier in &outputs[..i] {
            if same_file(out.path, earlier.path) {
                return Err(usage(out, format!("is the same file as {} ({})", earlier.flag, earlier.path.display())));
            }
        }
        for input in &inputs {
            if same_file(out.path, input.path) {
                return Err(usage(
                    out,
                    format!("is the input {} ({}); write the output elsewhere", input.flag, input.path.display()),
                ));
            }
        }
        writable(out)?;
    }
    Ok(())
}

fn usage(named: &Named<'_>, why: String) -> CliError {
    CliError::Usage { flag: named.flag, why: format!("{}: {why}", named.path.display()) }
}

/// What a path will refer to: an existing file's canonical path (symlinks
/// and `..` resolved), or for a new file its canonical directory joined
/// with its name. `None` when not even the directory exists.
fn identity(path: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(path) {
        return Some(c);
    }
    let name = path.file_name()?;
    std::fs::canonicalize(dir_of(path)).ok().map(|d| d.join(name))
}

/// The directory a path's file lives in (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `a` and `b` name one file: the same canonical path, or (Unix)
/// two names of one inode, which hard links give.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            // Devices such as /dev/null may be named twice on purpose.
            if ma.is_file() || mb.is_file() {
                return ma.dev() == mb.dev() && ma.ino() == mb.ino();
            }
            return false;
        }
    }
    match (identity(a), identity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The output can be written: it is not a directory, its directory exists,
/// and a file can be created there (tried, then removed: permissions, a
/// read-only filesystem and quotas are all the kernel's to judge). A stream
/// (a pipe, /dev/null) is written in place and only needs to exist.
fn writable(out: &Named<'_>) -> Result<(), CliError> {
    let dir = match std::fs::metadata(out.path) {
        Ok(m) if m.is_dir() => return Err(usage(out, "is a directory".into())),
        Ok(m) if !m.is_file() => return Ok(()),
        // An existing file is replaced in the directory of its real path.
        Ok(_) => match std::fs::canonicalize(out.path) {
            Ok(real) => dir_of(&real).to_path_buf(),
            Err(e) => return Err(usage(out, format!("cannot resolve the path: {e}"))),
        },
        Err(_) => dir_of(out.path).to_path_buf(),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(usage(out, format!("{} is not a directory", dir.display()))),
        Err(_) => return Err(usage(out, format!("directory {} does not exist", dir.display()))),
    }
    tempfile::Builder::new()
        .prefix(".hopfield-gpu-check-")
        .tempfile_in(&dir)
        .map(drop)
        .map_err(|e| usage(out, format!("cannot create files in {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<'a>(flag: &'static str, path: &'a Path) -> Option<Named<'a>> {
        Some(Named { flag, path })
    }

    #[test]
    fn same_file_sees_through_spellings_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.npy");
        std::fs::write(&a, b"x").unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(same_file(&a, &sub.join("..").join("a.npy")));
        // A file that does not exist yet: same directory and name.
        let new = dir.path().join("new.npy");
        assert!(same_file(&new, &sub.join("../new.npy")));
        assert!(!same_file(&new, &a));
        #[cfg(unix)]
        {
            let link = dir.path().join("link.npy");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            assert!(same_file(&a, &link));
            let hard = dir.path().join("hard.npy");
            std::fs::hard_link(&a, &hard).unwrap();
            assert!(same_file(&a, &hard));
            assert!(!same_file(Path::new("/dev/null"), Path::new("/dev/null")), "devices may repeat");
        }
    }

    #[test]
    fn outputs_are_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join("z.npy");
        let e = dir.path().join("e.npy");
        let m = dir.path().join("m.npy");
        std::fs::write(&m, b"x").unwrap();
        let msg = |r: Result<(), CliError>| r.unwrap_err().to_string();
        assert!(check(&[named("--out", &z), named("--energy-out", &e)], &[named("--memories", &m)]).is_ok());
        let err = msg(check(&[named("--out", &z), named("--energy-out", &z)], &[]));
        assert!(err.starts_with("--energy-out: ") && err.contains("same file as --out"), "{err}");
        let err = msg(check(&[named("--out", &m)], &[named("--memories", &m)]));
        assert!(err.contains("is the input --memories"), "{err}");
        let err = msg(check(&[named("--out", &dir.path().join("no/such/z.npy"))], &[]));
        assert!(err.starts_with("--out: ") && err.contains("does not exist"), "{err}");
        let err = msg(check(&[named("--out", dir.path())], &[]));
        assert!(err.contains("is a directory"), "{err}");
        let err = msg(check(&[named("--out", &m.join("z.npy"))], &[]));
        assert!(err.contains("is not a directory"), "{err}");
        // Nothing is left behind by the checks.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
