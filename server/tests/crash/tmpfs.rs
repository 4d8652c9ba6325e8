//! A small tmpfs in a private mount namespace, for a data directory that can be filled.
//!
//! `unshare --mount` starts a holder process that mounts the tmpfs and then waits on its
//! standard input; the server runs in its namespace through `nsenter`, and the test reaches
//! the files through `/proc/<holder>/root`. Nothing is mounted where the rest of the machine
//! sees it, and the namespace (with the tmpfs) goes away with the holder, which ends when
//! its input closes, that is when the test process ends, however it ends.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

pub struct PrivateTmpfs {
    holder: Child,
    input: Option<ChildStdin>,
    /// The mount point, as the namespace sees it (an empty directory outside it).
    pub dir: PathBuf,
}

impl PrivateTmpfs {
    /// Mounts a tmpfs of `size` (e.g. `16m`) at `dir`, which must exist. Err with the
    /// reason when this machine does not allow it.
    pub fn mount(dir: &Path, size: &str) -> Result<PrivateTmpfs, String> {
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o "size=$1,mode=0700" oxiscale-test "$0" && echo mounted && exec cat >/dev/null"#)
            .arg(dir)
            .arg(size)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() != "mounted" {
            let _ = holder.kill();
            let out = holder.wait_with_output().map_err(|e| e.to_string())?;
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(PrivateTmpfs {
            input: holder.stdin.take(),
            holder,
            dir: dir.to_owned(),
        })
    }

    /// What runs a program inside the namespace.
    pub fn enter(&self) -> Vec<OsString> {
        vec![
            "nsenter".into(),
            format!("--mount=/proc/{}/ns/mnt", self.holder.id()).into(),
            "--".into(),
        ]
    }

    /// `rel` inside the tmpfs, as this process reaches it.
    pub fn path(&self, rel: &str) -> PathBuf {
        let inside = self.dir.strip_prefix("/").expect("an absolute path");
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(inside)
            .join(rel)
    }

    /// Writes zeros to `name` until the filesystem refuses more; returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        let mut file = std::fs::File::create(self.path(name)).unwrap();
        let block = vec![0u8; 64 << 10];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last partial pages too.
        for size in [4096usize, 512, 1] {
            while file.write(&block[..size]).is_ok_and(|n| n > 0) {
                written += size as u64;
            }
        }
        written
    }
}

impl Drop for PrivateTmpfs {
    fn drop(&mut self) {
        drop(self.input.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
