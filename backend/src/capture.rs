//! Packet capture at the guest boundary: every frame both ways, as the guest's NIC exchanged it,
//! in pcapng (one Ethernet interface; each packet marked inbound — to the guest — or outbound —
//! from the guest — with the `epb_flags` direction bits).
//!
//! Capture never stalls the datapath: the worker copies the frame into a recycled buffer and
//! offers it to a bounded queue; a thread of its own writes the file. When the queue is full (a
//! slow disk), the frame is dropped from the capture and counted (`capture_drops`), never waited
//! for.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use log::warn;
use netstack::offload::PartialChecksum;

/// Frames waiting for the writer at most.
pub const QUEUE_FRAMES: usize = 4096;
/// Bytes of buffers the worker has handed over at most: frames waiting for the writer and
/// buffers waiting to be reused (a 64 KiB frame counts 64 KiB). Past it a frame is dropped from
/// the capture and counted, as for a full queue.
pub const QUEUE_BYTES: usize = 32 << 20;

/// Which way a frame crossed the guest's NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// To the guest (virtgate's RX queue).
    Inbound,
    /// From the guest (virtgate's TX queue).
    Outbound,
}

struct Record {
    micros: u64,
    direction: Direction,
    frame: Vec<u8>,
    /// Left partial by an offload: completed by the writer, off the datapath.
    checksum: Option<PartialChecksum>,
}

/// What the writer thread reports.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    pub written: AtomicU64,
    pub write_errors: AtomicU64,
}

/// A running capture; dropping it finishes the file.
pub struct Capture {
    queue: Option<SyncSender<Record>>,
    /// Capacity of the buffers out of the worker's hands (queued or waiting to be reused).
    handed_over: Arc<AtomicUsize>,
    /// Buffers the writer is done with (a mutex only to make the device `Sync`: one thread, the
    /// worker, ever takes it).
    recycled: Mutex<Receiver<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
    pub counters: Arc<CaptureCounters>,
}

impl Capture {
    /// Creates `path` (truncating it) and starts the writer.
    pub fn start(path: &Path) -> io::Result<Capture> {
        let mut out = BufWriter::new(File::create(path)?);
        write_section_header(&mut out)?;
        write_interface(&mut out)?;
        out.flush()?;
        let (queue, records) = mpsc::sync_channel::<Record>(QUEUE_FRAMES);
        let (give_back, recycled) = mpsc::sync_channel::<Vec<u8>>(QUEUE_FRAMES);
        let counters = Arc::new(CaptureCounters::default());
        let c = Arc::clone(&counters);
        let handed_over = Arc::new(AtomicUsize::new(0));
        let held = Arc::clone(&handed_over);
        let writer = std::thread::Builder::new()
            .name("virtgate-capture".into())
            .spawn(move || {
                // Write what is queued, then flush whenever the queue runs dry: the file is never
                // more than one burst behind, even if the process is killed.
                while let Ok(first) = records.recv() {
                    let mut next = Some(first);
                    while let Some(mut r) = next {
                        if let Some(c) = r.checksum {
                            c.complete(&mut r.frame);
                        }
                        match write_packet(&mut out, &r) {
                            Ok(()) => c.written.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                if c.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                    warn!("capture: write failed: {e}");
                                }
                                0
                            }
                        };
                        let cap = r.frame.capacity();
                        if give_back.try_send(r.frame).is_err() {
                            held.fetch_sub(cap, Ordering::AcqRel);
                        }
                        next = records.try_recv().ok();
                    }
                    if let Err(e) = out.flush() {
                        if c.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            warn!("capture: write failed: {e}");
                        }
                    }
                }
            })?;
        Ok(Capture {
            queue: Some(queue),
            handed_over,
            recycled: Mutex::new(recycled),
            writer: Some(writer),
            counters,
        })
    }

    /// Offers a frame to the writer; false (a drop to count) when the queue is full. A partial
    /// checksum (an offload) is completed by the writer, so the file shows the checksum as it is
    /// on a wire; a segmentation request is recorded as the one large frame that was exchanged.
    pub fn record(
        &mut self,
        direction: Direction,
        frame: &[u8],
        checksum: Option<PartialChecksum>,
    ) -> bool {
        self.record_parts(direction, &[frame], checksum)
    }

    /// [`Capture::record`] for a frame in pieces (headers, then payload lent from a send
    /// buffer), gathered into the record.
    pub fn record_parts(
        &mut self,
        direction: Direction,
        pieces: &[&[u8]],
        checksum: Option<PartialChecksum>,
    ) -> bool {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let Some(queue) = &self.queue else {
            return false;
        };
        let mut buf = self
            .recycled
            .get_mut()
            .map_or_else(|_| Vec::new(), |r| r.try_recv().unwrap_or_default());
        // Back in the worker's hands while it is filled.
        self.handed_over.fetch_sub(buf.capacity(), Ordering::AcqRel);
        if self.handed_over.load(Ordering::Acquire) + len.max(buf.capacity()) > QUEUE_BYTES {
            return false;
        }
        buf.clear();
        for p in pieces {
            buf.extend_from_slice(p);
        }
        let cap = buf.capacity();
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.handed_over.fetch_add(cap, Ordering::AcqRel);
        match queue.try_send(Record {
            micros,
            direction,
            frame: buf,
            checksum,
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.handed_over.fetch_sub(cap, Ordering::AcqRel);
                false
            }
        }
    }
}

impl Drop for Capture {
    /// Closes the queue and waits for the writer to finish the file.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    // Blocks are padded to 32 bits and carry their total length at both ends (pcapng §3.1).
    let padded = body.len().next_multiple_of(4);
    let total = (12 + padded) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&[0u8; 3][..padded - body.len()])?;
    out.write_all(&total.to_le_bytes())
}

/// Section Header Block: byte-order magic, version 1.0, section length unknown.
fn write_section_header(out: &mut impl Write) -> io::Result<()> {
    let mut body = Vec::with_capacity(16);
    body.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes());
    block(out, 0x0A0D_0D0A, &body)
}

/// Interface Description Block: Ethernet, no snap length, microsecond timestamps (the default
/// `if_tsresol`), named after the device.
fn write_interface(out: &mut impl Write) -> io::Result<()> {
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&1u16.to_le_bytes()); // LINKTYPE_ETHERNET
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // snaplen: none
    let name = b"virtgate guest NIC";
    body.extend_from_slice(&2u16.to_le_bytes()); // if_name
    body.extend_from_slice(&(name.len() as u16).to_le_bytes());
    body.extend_from_slice(name);
    body.resize(body.len().next_multiple_of(4), 0);
    body.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
    block(out, 1, &body)
}

/// Enhanced Packet Block with the direction in `epb_flags` (bits 0-1: 01 inbound, 10 outbound).
fn write_packet(out: &mut impl Write, r: &Record) -> io::Result<()> {
    let len = r.frame.len() as u32;
    let padded = r.frame.len().next_multiple_of(4);
    let total = (28 + padded + 12 + 4) as u32;
    out.write_all(&6u32.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?; // interface 0
    out.write_all(&((r.micros >> 32) as u32).to_le_bytes())?;
    out.write_all(&(r.micros as u32).to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&r.frame)?;
    out.write_all(&[0u8; 3][..padded - r.frame.len()])?;
    let flags: u32 = match r.direction {
        Direction::Inbound => 1,
        Direction::Outbound => 2,
    };
    out.write_all(&2u16.to_le_bytes())?; // epb_flags
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&flags.to_le_bytes())?;
    out.write_all(&[0, 0, 0, 0])?; // opt_endofopt
    out.write_all(&total.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_well_formed() {
        let dir = std::env::temp_dir().join(format!("virtgate-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcapng");
        let mut c = Capture::start(&path).unwrap();
        assert!(c.record(Direction::Outbound, &[0xaa; 61], None));
        assert!(c.record(Direction::Inbound, &[0xbb; 64], None));
        drop(c);
        let b = std::fs::read(&path).unwrap();
        // Walk the blocks: each length field at both ends agrees, and the total is the file.
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < b.len() {
            let kind = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            let end = u32::from_le_bytes(b[at + len - 4..at + len].try_into().unwrap()) as usize;
            assert_eq!(len, end);
            kinds.push(kind);
            at += len;
        }
        assert_eq!(at, b.len());
        assert_eq!(kinds, vec![0x0A0D_0D0A, 1, 6, 6]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stalled_writer_holds_a_bounded_number_of_bytes() {
        // The file is a FIFO nobody reads yet: the writer stalls once the pipe is full.
        let dir = std::env::temp_dir().join(format!("virtgate-capfifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stalled.pcapng");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let reader = std::thread::spawn({
            let path = path.clone();
            move || std::fs::File::open(path).unwrap()
        });
        let mut c = Capture::start(&path).unwrap();
        let mut reader = reader.join().unwrap();
        let frame = vec![0x5a; 65000];
        let taken = (0..QUEUE_FRAMES)
            .filter(|_| c.record(Direction::Inbound, &frame, None))
            .count();
        // What is held is bounded in bytes (a few frames sit in the pipe and the writer).
        assert!(taken < QUEUE_FRAMES);
        assert!(taken <= QUEUE_BYTES / 65000 + 4, "{taken} frames taken");
        assert!(c.handed_over.load(Ordering::Acquire) <= QUEUE_BYTES);
        // The reader drains the pipe: the writer finishes and the capture completes.
        let drain = std::thread::spawn(move || {
            let mut sink = Vec::new();
            io::Read::read_to_end(&mut reader, &mut sink).unwrap();
            sink.len()
        });
        drop(c);
        assert!(drain.join().unwrap() > taken * 65000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
