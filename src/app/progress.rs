//! Progress on stderr while a rekey works: a bar on a terminal (bytes, rate, ETA, SSTables
//! done/total), a line per SSTable otherwise, nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use sstable_rekey::rekey::report::{human_bytes, SstableReport, Status};
use sstable_rekey::rekey::Progress;

pub struct Shown {
    enabled: bool,
    tty: bool,
    bar: OnceLock<indicatif::ProgressBar>,
    total: AtomicUsize,
    done: AtomicUsize,
}

impl Shown {
    pub fn new(enabled: bool) -> Self {
        Shown {
            enabled,
            tty: std::io::stderr().is_terminal(),
            bar: OnceLock::new(),
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }
}

impl Progress for Shown {
    fn start(&self, bytes: u64, sstables: usize) {
        self.total.store(sstables, Ordering::Relaxed);
        if self.enabled && self.tty && sstables > 0 {
            let b = indicatif::ProgressBar::new(bytes);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b.set_message(format!("0/{sstables} SSTables"));
            let _ = self.bar.set(b);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.get() {
            b.inc(bytes);
        }
    }

    fn finished(&self, r: &SstableReport) {
        let d = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total.load(Ordering::Relaxed);
        if let Some(b) = self.bar.get() {
            b.set_message(format!("{d}/{total} SSTables"));
            if r.status == Status::Failed {
                b.println(format!(
                    "FAILED {}: {}",
                    r.old,
                    r.reason.as_deref().unwrap_or("")
                ));
            }
        } else if self.enabled && !self.tty {
            let what = match r.status {
                Status::Rekeyed => format!(
                    "rekeyed {} chunks ({}) in {:.2}s -> {}",
                    r.rekeyed_chunks,
                    human_bytes(r.bytes_in),
                    r.seconds,
                    r.new.as_deref().unwrap_or("")
                ),
                Status::Failed => format!("FAILED: {}", r.reason.as_deref().unwrap_or("")),
                _ => format!("{:?}", r.status).to_lowercase(),
            };
            errln!("[{d}/{total}] {} {}: {what}", r.table, r.old);
        }
    }

    fn end(&self) {
        if let Some(b) = self.bar.get() {
            b.finish_and_clear();
        }
    }
}
