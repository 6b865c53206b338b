//! Parallel, streaming gzip with the sha256 of the compressed stream computed in the same pass.
//!
//! The input is cut into fixed-size blocks; each block is compressed on a worker thread into a
//! complete gzip member (libdeflate, raw DEFLATE + CRC-32), and a writer thread puts the members
//! out in order while hashing them. A concatenation of gzip members is one valid gzip file (RFC
//! 1952 section 2.2; `gzip -d`, `tar -xzf` and every zlib-based reader in multi-member mode read
//! it whole). Block boundaries depend only on input offsets, never on the number of threads, so
//! the output is byte-identical whatever the machine. Memory is flat: at most a fixed number of
//! blocks is in flight, whatever the size of the input.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Input bytes per gzip member. 1 MiB keeps the per-member cost (18 bytes of framing and a cold
/// 32 KiB window) under 0.1% while giving every core work on small archives too.
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
/// gzip's default level, the size target of the tarball.
pub const DEFAULT_LEVEL: i32 = 6;

/// The gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS = Unix. Fixed
/// bytes so that two runs give the same output.
const MEMBER_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// What came out of a finished stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GzSummary {
    /// Lowercase hex sha256 of the compressed bytes written.
    pub sha256: String,
    /// Bytes written (compressed).
    pub compressed_size: u64,
    /// Bytes taken in (uncompressed).
    pub uncompressed_size: u64,
}

/// Settings of a [`ParGzWriter`].
#[derive(Clone, Copy, Debug)]
pub struct GzOptions {
    pub level: i32,
    pub threads: usize,
    pub block_size: usize,
}

impl Default for GzOptions {
    fn default() -> Self {
        GzOptions {
            level: DEFAULT_LEVEL,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// A `Write` that gzips on all cores into `W`. Call [`ParGzWriter::finish`]: dropping it without
/// finishing abandons the output.
pub struct ParGzWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    block_size: usize,
    seq: u64,
    uncompressed: u64,
    jobs: Option<SyncSender<Job>>,
    tokens: Receiver<()>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<(W, Sha256, u64)>>>,
}

impl<W: Write + Send + 'static> std::fmt::Debug for ParGzWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParGzWriter")
            .field("seq", &self.seq)
            .field("uncompressed", &self.uncompressed)
            .finish()
    }
}

impl<W: Write + Send + 'static> ParGzWriter<W> {
    pub fn new(out: W, opts: GzOptions) -> io::Result<Self> {
        let level = libdeflater::CompressionLvl::new(opts.level).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("compression level {} is not in 1..=12", opts.level),
            )
        })?;
        let threads = opts.threads.max(1);
        let block_size = opts.block_size.max(1024);
        // Blocks in flight: enough to keep every worker busy while the writer catches up, and no
        // more, so memory stays at about 2 x in_flight x block_size.
        let in_flight = threads * 2 + 2;
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(in_flight);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let (tokens_tx, tokens_rx) = mpsc::sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            tokens_tx.send(()).expect("receiver alive");
        }
        let workers = (0..threads)
            .map(|_| {
                let jobs = Arc::clone(&jobs_rx);
                let done = done_tx.clone();
                std::thread::spawn(move || {
                    let mut compressor = libdeflater::Compressor::new(level);
                    loop {
                        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((seq, data)) = job else { return };
                        if done.send((seq, member(&mut compressor, &data))).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop(done_tx);
        let writer = std::thread::spawn(move || write_in_order(out, done_rx, tokens_tx));
        Ok(ParGzWriter {
            buf: Vec::with_capacity(block_size),
            block_size,
            seq: 0,
            uncompressed: 0,
            jobs: Some(jobs_tx),
            tokens: tokens_rx,
            workers,
            writer: Some(writer),
        })
    }

    fn send_block(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.block_size));
        // A token per block bounds what is in flight; none means the writer has stopped.
        let sent = self.tokens.recv().is_ok()
            && self
                .jobs
                .as_ref()
                .is_some_and(|j| j.send((self.seq, data)).is_ok());
        if !sent {
            return Err(self.take_writer_error());
        }
        self.seq += 1;
        Ok(())
    }

    /// The writer's error after it stopped early.
    fn take_writer_error(&mut self) -> io::Error {
        self.jobs = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the gzip writer thread panicked"),
            _ => io::Error::other("the gzip pipeline stopped"),
        }
    }

    /// Compress what is left, wait for every block to be written, and return the output with the
    /// sha256 and sizes.
    pub fn finish(mut self) -> io::Result<(W, GzSummary)> {
        // Always at least one member, so that empty input is still a valid gzip file.
        if !self.buf.is_empty() || self.seq == 0 {
            self.send_block()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            w.join()
                .map_err(|_| io::Error::other("a gzip worker thread panicked"))?;
        }
        let writer = self.writer.take().expect("finished once");
        let (out, hasher, compressed) = writer
            .join()
            .map_err(|_| io::Error::other("the gzip writer thread panicked"))??;
        Ok((
            out,
            GzSummary {
                sha256: hex::encode(hasher.finalize()),
                compressed_size: compressed,
                uncompressed_size: self.uncompressed,
            },
        ))
    }
}

impl<W: Write + Send + 'static> Write for ParGzWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = self.block_size - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.block_size {
                self.send_block()?;
            }
        }
        self.uncompressed += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParGzWriter<W> {
    fn drop(&mut self) {
        // Unfinished: stop the pipeline and let the threads end; the output is abandoned.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// One complete gzip member of `data`.
fn member(c: &mut libdeflater::Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; MEMBER_HEADER.len() + c.deflate_compress_bound(data.len()) + 8];
    out[..MEMBER_HEADER.len()].copy_from_slice(&MEMBER_HEADER);
    let n = c
        .deflate_compress(data, &mut out[MEMBER_HEADER.len()..])
        .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
    out.truncate(MEMBER_HEADER.len() + n);
    out.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
    // ISIZE is the input length modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(out)
}

/// The writer thread: members out in sequence order, hashed as they go.
fn write_in_order<W: Write>(
    mut out: W,
    done: Receiver<Done>,
    tokens: SyncSender<()>,
) -> io::Result<(W, Sha256, u64)> {
    let mut hasher = Sha256::new();
    let mut next = 0u64;
    let mut written = 0u64;
    let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (seq, result) in done {
        pending.insert(seq, result?);
        while let Some(bytes) = pending.remove(&next) {
            out.write_all(&bytes)?;
            hasher.update(&bytes);
            written += bytes.len() as u64;
            next += 1;
            let _ = tokens.send(());
        }
    }
    if !pending.is_empty() {
        return Err(io::Error::other("gzip blocks went missing"));
    }
    out.flush()?;
    Ok((out, hasher, written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], threads: usize, block_size: usize) -> (Vec<u8>, GzSummary) {
        let mut w = ParGzWriter::new(
            Vec::new(),
            GzOptions {
                level: 6,
                threads,
                block_size,
            },
        )
        .unwrap();
        for chunk in data.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 31) ^ (i >> 7)) as u8 % 61).collect()
    }

    #[test]
    fn round_trips_and_hashes_what_it_wrote() {
        let data = sample(300_000);
        let (out, s) = gz(&data, 3, 4096);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(s.uncompressed_size, data.len() as u64);
        assert_eq!(s.compressed_size, out.len() as u64);
        assert_eq!(s.sha256, hex::encode(Sha256::digest(&out)));
    }

    #[test]
    fn output_does_not_depend_on_the_thread_count() {
        let data = sample(200_000);
        assert_eq!(gz(&data, 1, 8192).0, gz(&data, 4, 8192).0);
    }

    #[test]
    fn empty_input_is_a_valid_gzip_file() {
        let (out, _) = gz(&[], 2, 4096);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_is_reported() {
        let mut w = ParGzWriter::new(
            Failing,
            GzOptions {
                level: 1,
                threads: 2,
                block_size: 1024,
            },
        )
        .unwrap();
        let data = sample(100_000);
        let err = w
            .write_all(&data)
            .err()
            .or_else(|| w.finish().err())
            .expect("an error");
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
