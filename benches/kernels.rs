//! Kernel benchmarks (criterion): one 2 MiB rewrite window of ~7 KiB messages (the size of
//! LZ4-compressed 16 KiB chunks), the unit the rekey path works on. Whole-run figures with
//! baselines come from `sstable-rekey bench`; this isolates the AES paths:
//!
//! - `cbc-crate-encrypt`: the RustCrypto `cbc` crate, one message at a time (the baseline);
//! - `decrypt`: CBC decryption into a plaintext arena (`AesKey::decrypt_append`);
//! - `multibuf-encrypt` / `portable-multibuf-encrypt`: multi-buffer CBC encryption, AES-NI
//!   kernel and RustCrypto backend;
//! - `decrypt+multibuf`: the two-pass rekey (used without VAES);
//! - `fused-rekey`: the VAES decrypt-and-encrypt kernel (when the CPU has VAES).
//!
//! Run: `cargo bench --bench kernels` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sstable_rekey::crypto::cipher::CbcJob;
use sstable_rekey::crypto::fused::{self, ReJob};
use sstable_rekey::crypto::AesKey;
use sstable_rekey::crypto::Mode;

const WINDOW: usize = 2 << 20;

/// Message lengths like compressed chunks: 5–9 KiB, deterministic.
fn lengths() -> Vec<usize> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut out = Vec::new();
    let mut total = 0;
    while total < WINDOW {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 5 * 1024 + (x % 4096) as usize;
        total += n;
        out.push(n);
    }
    out
}

fn kernels(c: &mut Criterion) {
    use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
    type P = cbc::cipher::block_padding::Pkcs7;
    for bits in [128usize, 256] {
        let mut g = c.benchmark_group(format!("aes-{bits}-cbc"));
        let raw_old: Vec<u8> = (0..bits / 8).map(|i| i as u8).collect();
        let raw_new: Vec<u8> = (0..bits / 8).map(|i| 0x80 ^ i as u8).collect();
        let old = AesKey::new(&raw_old).unwrap();
        let new = AesKey::new(&raw_new).unwrap();
        let lens = lengths();
        let plains: Vec<Vec<u8>> = lens.iter().map(|&n| vec![0x5A; n]).collect();
        let iv = [7u8; 16];
        let cts: Vec<Vec<u8>> = plains
            .iter()
            .map(|p| {
                let mut v = Vec::new();
                old.encrypt_append(Mode::Cbc, &iv, p, &mut v);
                v
            })
            .collect();
        let bytes: usize = cts.iter().map(Vec::len).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        let mut outs: Vec<Vec<u8>> = cts.iter().map(|c| vec![0u8; c.len()]).collect();

        g.bench_function(BenchmarkId::new("cbc-crate-encrypt", bits), |b| {
            b.iter(|| {
                for (p, o) in plains.iter().zip(outs.iter_mut()) {
                    let n = p.len();
                    o[..n].copy_from_slice(p);
                    let r = match bits {
                        128 => cbc::Encryptor::<aes::Aes128>::new_from_slices(&raw_new, &iv)
                            .unwrap()
                            .encrypt_padded::<P>(o, n)
                            .map(|_| ()),
                        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&raw_new, &iv)
                            .unwrap()
                            .encrypt_padded::<P>(o, n)
                            .map(|_| ()),
                    };
                    r.unwrap();
                }
            })
        });
        let mut arena: Vec<u8> = Vec::with_capacity(bytes);
        g.bench_function(BenchmarkId::new("decrypt", bits), |b| {
            b.iter(|| {
                arena.clear();
                for c in &cts {
                    old.decrypt_append(Mode::Cbc, &iv, c, &mut arena).unwrap();
                }
            })
        });
        for (name, portable) in [
            ("multibuf-encrypt", false),
            ("portable-multibuf-encrypt", true),
        ] {
            g.bench_function(BenchmarkId::new(name, bits), |b| {
                b.iter(|| {
                    let mut jobs: Vec<CbcJob> = plains
                        .iter()
                        .zip(outs.iter_mut())
                        .map(|(p, o)| CbcJob {
                            plain: p,
                            iv,
                            out: o,
                        })
                        .collect();
                    if portable {
                        new.encrypt_cbc_many_portable(&mut jobs);
                    } else {
                        new.encrypt_cbc_many(&mut jobs);
                    }
                })
            });
        }
        g.bench_function(BenchmarkId::new("decrypt+multibuf", bits), |b| {
            b.iter(|| {
                arena.clear();
                let mut spans = Vec::with_capacity(cts.len());
                for c in &cts {
                    let a = arena.len();
                    old.decrypt_append(Mode::Cbc, &iv, c, &mut arena).unwrap();
                    spans.push(a..arena.len());
                }
                let mut jobs: Vec<CbcJob> = spans
                    .iter()
                    .zip(outs.iter_mut())
                    .map(|(s, o)| CbcJob {
                        plain: &arena[s.clone()],
                        iv,
                        out: o,
                    })
                    .collect();
                new.encrypt_cbc_many(&mut jobs);
            })
        });
        if fused::available() {
            g.bench_function(BenchmarkId::new("fused-rekey", bits), |b| {
                b.iter(|| {
                    let mut jobs: Vec<ReJob> = cts
                        .iter()
                        .zip(outs.iter_mut())
                        .map(|(c, o)| ReJob {
                            ct: c,
                            old_iv: iv,
                            new_iv: iv,
                            out: o,
                        })
                        .collect();
                    old.rekey_cbc_many(&new, &mut jobs);
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
