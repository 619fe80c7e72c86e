//! Fake sysfs trees for source tests: there are no power sensors on a CI machine, so the
//! sysfs ABI is reproduced file by file in a scratch directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A scratch directory standing in for `/sys`, removed on drop.
pub struct FakeSys(pub PathBuf);

impl FakeSys {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "dcwatt-fakesys-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        FakeSys(p)
    }

    /// Writes `value` (and a newline, as the kernel does) at `rel`.
    pub fn set(&self, rel: &str, value: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{value}\n")).unwrap();
    }

    pub fn root(&self) -> &Path {
        &self.0
    }
}

impl Drop for FakeSys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
