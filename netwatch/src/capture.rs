//! Reads Ethernet frames from pcap and pcapng files (through the pcap-file crate).
//!
//! Frames come out one by one with their number in the file, so that an error names the file
//! and the frame where it happened; everything read before an error has already been handed
//! out.

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{
        Block, PcapNgReader,
        blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
    },
};

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// 1-based position among the file's packets.
    pub number: u64,
    /// Capture time since the Unix epoch.
    pub timestamp: Duration,
    /// The frame from its Ethernet header on, as captured.
    pub data: Vec<u8>,
    /// Its length on the wire (larger than `data` when the capture cut it).
    pub original_len: u32,
}

/// Why a capture could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Opening or reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Neither pcap nor pcapng.
    #[error("{path}: not a pcap or pcapng file (magic {magic:02x?})")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its first bytes.
        magic: [u8; 4],
    },
    /// A frame of a link type other than Ethernet.
    #[error(
        "{path}: frame {frame}: link type {link_type:?} is not Ethernet; netwatch reads Ethernet captures only"
    )]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The frame's number.
        frame: u64,
        /// What the file says.
        link_type: DataLink,
    },
    /// The file is corrupt or ends inside a record.
    #[error("{path}: frame {frame}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The number the frame would have had.
        frame: u64,
        /// What the parser said.
        reason: String,
    },
}

enum Format {
    Pcap(PcapReader<BufReader<File>>),
    PcapNg(PcapNgReader<BufReader<File>>),
}

/// An iterator over the frames of a capture file; it stops after the first error.
pub struct CaptureReader {
    path: PathBuf,
    format: Format,
    frames: u64,
    failed: bool,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

impl CaptureReader {
    /// Opens `path`, telling pcap from pcapng by the first four bytes.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let io_error = |source| CaptureError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io_error)?;
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).map_err(io_error)?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        let corrupt = |err: pcap_file::PcapError| CaptureError::Corrupt {
            path: path.to_owned(),
            frame: 1,
            reason: format!("bad file header: {err}"),
        };
        let format = match magic {
            PCAPNG_MAGIC => {
                Format::PcapNg(PcapNgReader::new(BufReader::new(file)).map_err(corrupt)?)
            }
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => {
                let reader = PcapReader::new(BufReader::new(file)).map_err(corrupt)?;
                let link_type = reader.header().datalink;
                if link_type != DataLink::ETHERNET {
                    return Err(CaptureError::LinkType {
                        path: path.to_owned(),
                        frame: 1,
                        link_type,
                    });
                }
                Format::Pcap(reader)
            }
            magic => {
                return Err(CaptureError::UnknownFormat {
                    path: path.to_owned(),
                    magic,
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            format,
            frames: 0,
            failed: false,
        })
    }

    fn next_frame(&mut self) -> Option<Result<CapturedFrame, CaptureError>> {
        let number = self.frames + 1;
        let corrupt = |path: &Path, err: pcap_file::PcapError| CaptureError::Corrupt {
            path: path.to_owned(),
            frame: number,
            reason: err.to_string(),
        };
        let frame = match &mut self.format {
            // Read raw: pcap-file refuses a frame whose original length exceeds the snap
            // length, which is every long frame of a `tcpdump -s 64` capture. Only what was
            // captured must fit the snap length.
            Format::Pcap(reader) => {
                let header = reader.header();
                match reader.next_raw_packet()? {
                    Ok(packet) => {
                        let nanos = match header.ts_resolution {
                            pcap_file::TsResolution::MicroSecond => {
                                u64::from(packet.ts_frac) * 1_000
                            }
                            pcap_file::TsResolution::NanoSecond => u64::from(packet.ts_frac),
                        };
                        let invalid = |what: &'static str| {
                            corrupt(&self.path, pcap_file::PcapError::InvalidField(what))
                        };
                        if nanos >= 1_000_000_000 {
                            return Some(Err(invalid("fraction of a second >= 1 s")));
                        }
                        if header.snaplen != 0 && packet.incl_len > header.snaplen {
                            return Some(Err(invalid("captured length > snap length")));
                        }
                        if packet.incl_len > packet.orig_len {
                            return Some(Err(invalid("captured length > original length")));
                        }
                        CapturedFrame {
                            number,
                            timestamp: Duration::from_secs(u64::from(packet.ts_sec))
                                + Duration::from_nanos(nanos),
                            data: packet.data.into_owned(),
                            original_len: packet.orig_len,
                        }
                    }
                    Err(err) => return Some(Err(corrupt(&self.path, err))),
                }
            }
            Format::PcapNg(reader) => loop {
                let block = match reader.next_block()? {
                    Ok(block) => block,
                    Err(err) => return Some(Err(corrupt(&self.path, err))),
                };
                let (interface_id, raw_time, data, original_len) = match block {
                    Block::EnhancedPacket(packet) => (
                        packet.interface_id,
                        Some(packet.timestamp),
                        packet.data.into_owned(),
                        packet.original_len,
                    ),
                    Block::SimplePacket(packet) => {
                        (0, None, packet.data.into_owned(), packet.original_len)
                    }
                    Block::Packet(packet) => (
                        u32::from(packet.interface_id),
                        Some(Duration::from_nanos(packet.timestamp)),
                        packet.data.into_owned(),
                        packet.original_len,
                    ),
                    _ => continue,
                };
                let Some(interface) = reader.interfaces().get(interface_id as usize) else {
                    return Some(Err(CaptureError::Corrupt {
                        path: self.path.clone(),
                        frame: number,
                        reason: format!(
                            "packet names interface {interface_id}, which is not described"
                        ),
                    }));
                };
                if interface.linktype != DataLink::ETHERNET {
                    return Some(Err(CaptureError::LinkType {
                        path: self.path.clone(),
                        frame: number,
                        link_type: interface.linktype,
                    }));
                }
                break CapturedFrame {
                    number,
                    timestamp: raw_time
                        .map(|raw| scale_timestamp(raw, interface))
                        .unwrap_or_default(),
                    data,
                    original_len,
                };
            },
        };
        self.frames = number;
        Some(Ok(frame))
    }
}

impl Iterator for CaptureReader {
    type Item = Result<CapturedFrame, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.next_frame();
        if matches!(item, Some(Err(_))) {
            self.failed = true;
        }
        item
    }
}

/// pcap-file 2.0 hands out the raw pcapng timestamp as if it were nanoseconds; its real unit
/// is set by the interface's `if_tsresol` option, microseconds by default (RFC draft
/// "PCAP Next Generation", section 4.2).
fn scale_timestamp(raw: Duration, interface: &InterfaceDescriptionBlock<'_>) -> Duration {
    let units = raw.as_nanos();
    let resolution = interface
        .options
        .iter()
        .find_map(|option| match option {
            InterfaceDescriptionOption::IfTsResol(resolution) => Some(*resolution),
            _ => None,
        })
        .unwrap_or(6);
    let nanos = if resolution & 0x80 == 0 {
        let exponent = u32::from(resolution);
        if exponent <= 9 {
            units * 10u128.pow(9 - exponent)
        } else {
            units / 10u128.pow((exponent - 9).min(38))
        }
    } else {
        let exponent = u32::from(resolution & 0x7f).min(127);
        (units * 1_000_000_000) >> exponent
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn interface(resolution: Option<u8>) -> InterfaceDescriptionBlock<'static> {
        let mut block = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
        if let Some(resolution) = resolution {
            block
                .options
                .push(InterfaceDescriptionOption::IfTsResol(resolution));
        }
        block
    }

    #[test]
    fn pcapng_timestamps_default_to_microseconds() {
        let raw = Duration::from_nanos(1_500_000);
        assert_eq!(
            scale_timestamp(raw, &interface(None)),
            Duration::from_millis(1500)
        );
        assert_eq!(scale_timestamp(raw, &interface(Some(9))), raw);
        assert_eq!(
            scale_timestamp(Duration::from_nanos(1024), &interface(Some(0x80 | 10))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn unknown_files_are_named_in_the_error() {
        let path = std::env::temp_dir().join(format!("netwatch-not-a-pcap-{}", std::process::id()));
        File::create(&path)
            .and_then(|mut file| file.write_all(b"hello, world"))
            .unwrap_or_else(|err| panic!("{err}"));
        let err = CaptureReader::open(&path)
            .err()
            .unwrap_or_else(|| panic!("opened a text file"));
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, CaptureError::UnknownFormat { .. }), "{err}");
        assert!(err.to_string().contains("netwatch-not-a-pcap"), "{err}");
    }
}
