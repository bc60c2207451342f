//! A seeded mutation fuzzer for the header parser the receiver runs on every stored instance
//! (`store::header::read_header`, dicom-rs underneath), on stable Rust, in the normal test suite.
//!
//! The corpus is real scanner files from `shared/data` (native and JPEG 2000). Each case mutates the
//! file meta and data set before Pixel Data (bit flips, byte overwrites, length fields set to edge
//! values, inserted / deleted runs, truncation), writes it and parses it: an `Err` is fine, a panic or
//! a case taking over two seconds is a finding. `SEGNODE_FUZZ_CASES` (default 2000, a few seconds) and
//! `SEGNODE_FUZZ_SEED` (`random` for a fresh one) set the run; `scripts/fuzz` runs a long one.

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>, header_len: usize) {
    for _ in 0..rng.random_range(1..=4) {
        let span = header_len.min(bytes.len());
        if span < 8 {
            return;
        }
        let i = rng.random_range(0..span - 4);
        match rng.random_range(0..6) {
            0 => bytes[i] ^= 1 << rng.random_range(0..8),
            1 => bytes[i] = rng.random(),
            2 => {
                let v: u32 = [0, 1, 0xFFFF, 0xFFFF_FFFF, 0x7FFF_FFFF, 0xFFFF_FFF0, 3]
                    [rng.random_range(0..7)];
                if rng.random_bool(0.5) {
                    bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
                } else {
                    bytes[i..i + 2].copy_from_slice(&(v as u16).to_le_bytes());
                }
            }
            3 => {
                let n = rng.random_range(1..32);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                bytes.splice(i..i, junk);
            }
            4 => {
                let j = (i + rng.random_range(1..32)).min(bytes.len());
                bytes.drain(i..j);
            }
            _ => bytes.truncate(rng.random_range(i..span.max(i + 1))),
        }
    }
}

/// Finding of the first run (seed 14, case 37): a file meta group length 20 bytes too long made dicom-rs
/// misread the data set and zero-fill a 4 GB value (3.7 GB resident, 4 s). Refused now, at once.
#[test]
fn regression_meta_group_length_off_is_refused_without_allocating() {
    let mut files = support::files_under(&support::shared_data("chest-ct-crop"));
    files.sort();
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let gl = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]);
    bytes[140..144].copy_from_slice(&(gl + 20).to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gl.dcm");
    std::fs::write(&path, &bytes).unwrap();
    let t = Instant::now();
    let r = segnode::store::header::read_header(&path);
    assert!(r.is_err(), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn mutated_files_do_not_crash_the_header_parser() {
    let cases: usize = std::env::var("SEGNODE_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = match std::env::var("SEGNODE_FUZZ_SEED").ok().as_deref() {
        None | Some("") => 14,
        Some("random") => rand::random(),
        Some(s) => s.parse().expect("SEGNODE_FUZZ_SEED"),
    };
    let mut corpus = Vec::new();
    for folder in ["chest-ct-crop", "ct-jpeg2000"] {
        let mut files = support::files_under(&support::shared_data(folder));
        files.sort();
        // the length guard refuses none of the real files
        for f in &files {
            segnode::store::lengths::check(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
        let bytes = std::fs::read(&files[0]).expect("corpus file");
        // the parser stops at Pixel Data (7FE0,0010): mutate what comes before it
        let pixel = bytes
            .windows(4)
            .position(|w| w == [0xE0, 0x7F, 0x10, 0x00])
            .unwrap_or(bytes.len());
        assert!(segnode::store::header::read_header(&files[0]).is_ok());
        corpus.push((bytes, pixel + 16));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.dcm");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut parsed, mut slowest) = (0usize, Duration::ZERO);
    for case in 0..cases {
        let (orig, header_len) = &corpus[case % corpus.len()];
        let mut bytes = orig.clone();
        mutate(&mut rng, &mut bytes, *header_len);
        std::fs::write(&path, &bytes).unwrap();
        let t = Instant::now();
        let result = std::panic::catch_unwind(|| segnode::store::header::read_header(&path));
        let took = t.elapsed();
        slowest = slowest.max(took);
        match result {
            Err(_) => {
                let keep =
                    std::env::temp_dir().join(format!("segnode-fuzz-crash-{seed}-{case}.dcm"));
                let _ = std::fs::copy(&path, &keep);
                panic!(
                    "header parser panicked on case {case} of seed {seed} (kept as {})",
                    keep.display()
                );
            }
            Ok(r) => parsed += usize::from(r.is_ok()),
        }
        if took >= Duration::from_secs(2) {
            let keep = std::env::temp_dir().join(format!("segnode-fuzz-slow-{seed}-{case}.dcm"));
            let _ = std::fs::copy(&path, &keep);
            panic!(
                "case {case} of seed {seed} took {took:?} (kept as {})",
                keep.display()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz_header: seed {seed}, {cases} files in {secs:.1} s ({:.0} files/s), {parsed} still parsed, \
         slowest {} ms; no panic",
        cases as f64 / secs.max(1e-9),
        slowest.as_millis()
    );
}
