//! A guard run before the header parser: every value length a received file declares, up to Pixel Data,
//! must fit in the bytes that follow it.
//!
//! dicom-rs 0.10.1 reserves and zero-fills a value's declared length before reading it, so a 26 kB file
//! whose file meta group length is off by a few bytes (found by `tests/fuzz_header.rs`) made the header
//! parser fill gigabytes and take seconds: one small C-STORE from any allowed caller could exhaust the
//! node's memory. This walk visits the same elements the parser will (file meta by its group length,
//! then the data set in its transfer syntax, into sequences and items), seeking over values instead of
//! reading them, and refuses the file at the first length that overruns its container or the file.
//! Transfer syntaxes it does not walk (big endian, deflate) are left to the parser.

use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::{Tag, VR};
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// Deepest nesting of sequences accepted.
const MAX_DEPTH: usize = 32;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

struct Walk<R> {
    r: R,
    pos: u64,
    len: u64,
    explicit: bool,
}

impl<R: Read + Seek> Walk<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| format!("truncated at byte {}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.bytes::<2>()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes::<4>()?))
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        self.r
            .seek_relative(n as i64)
            .map_err(|e| format!("seek: {e}"))?;
        self.pos += n;
        Ok(())
    }

    /// A value of `len` bytes starting here must end by `end`.
    fn fits(&self, tag: Tag, len: u32, end: u64) -> Result<(), String> {
        if self.pos + u64::from(len) > end {
            Err(format!(
                "element {tag} declares {len} bytes at byte {}, only {} remain in its container",
                self.pos,
                end.saturating_sub(self.pos)
            ))
        } else {
            Ok(())
        }
    }

    /// Tag, VR and length of the next element.
    fn header(&mut self, explicit: bool) -> Result<(Tag, Option<VR>, u32), String> {
        let tag = Tag(self.u16()?, self.u16()?);
        if tag.group() == 0xFFFE || !explicit {
            return Ok((tag, None, self.u32()?));
        }
        let vr = self.bytes::<2>()?;
        let vr = VR::from_binary(vr).ok_or_else(|| format!("element {tag}: bad VR {vr:?}"))?;
        use VR::*;
        let len = match vr {
            OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV => {
                self.skip(2)?;
                self.u32()?
            }
            _ => u32::from(self.u16()?),
        };
        Ok((tag, Some(vr), len))
    }

    /// Elements until `end` (defined length) or an item delimitation (`until_delimiter`).
    fn dataset(
        &mut self,
        end: u64,
        until_delimiter: bool,
        top: bool,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("sequences nested deeper than {MAX_DEPTH}"));
        }
        loop {
            if !until_delimiter && self.pos >= end {
                return Ok(());
            }
            if top && self.pos + 8 > self.len {
                return Ok(());
            }
            let explicit = self.explicit;
            let (tag, vr, len) = self.header(explicit)?;
            if tag == Tag(0xFFFE, 0xE00D) {
                return if until_delimiter {
                    Ok(())
                } else {
                    Err(format!(
                        "item delimiter in a defined-length item at byte {}",
                        self.pos
                    ))
                };
            }
            if top && tag >= Tag(0x7FE0, 0x0010) {
                // the header parser stops here (read_until Pixel Data)
                return Ok(());
            }
            let sequence = match vr {
                Some(v) => v == VR::SQ,
                None => is_sequence(tag),
            };
            if len == UNDEFINED {
                if sequence || vr.is_none() || vr == Some(VR::UN) {
                    self.items(None, end, depth + 1)?;
                } else {
                    return Err(format!("element {tag} ({vr:?}) with undefined length"));
                }
            } else {
                self.fits(tag, len, end)?;
                if sequence {
                    let stop = self.pos + u64::from(len);
                    self.items(Some(stop), stop, depth + 1)?;
                } else {
                    self.skip(u64::from(len))?;
                }
            }
        }
    }

    /// Items of a sequence: until `defined` end, else until the sequence delimiter; never past `bound`.
    fn items(&mut self, defined: Option<u64>, bound: u64, depth: usize) -> Result<(), String> {
        loop {
            if defined.is_some_and(|end| self.pos >= end) {
                return Ok(());
            }
            let tag = Tag(self.u16()?, self.u16()?);
            let len = self.u32()?;
            match tag {
                Tag(0xFFFE, 0xE0DD) => return Ok(()),
                Tag(0xFFFE, 0xE000) if len == UNDEFINED => {
                    self.dataset(bound, true, false, depth)?
                }
                Tag(0xFFFE, 0xE000) => {
                    self.fits(tag, len, bound)?;
                    let end = self.pos + u64::from(len);
                    self.dataset(end, false, false, depth)?;
                    if self.pos != end {
                        return Err(format!("item ends at byte {} instead of {end}", self.pos));
                    }
                }
                other => return Err(format!("{other} where a sequence item was expected")),
            }
        }
    }
}

fn is_sequence(tag: Tag) -> bool {
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(tag)
        .is_some_and(|e| matches!(e.vr, VirtualVr::Exact(VR::SQ)))
}

/// Check the declared lengths of a Part 10 file up to Pixel Data (see the module docs).
pub fn check(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    walk(Walk {
        r: BufReader::with_capacity(64 * 1024, file),
        pos: 0,
        len,
        explicit: true,
    })
}

/// [`check`] for a Part 10 file held in memory (an instance received for the journal).
pub fn check_bytes(bytes: &[u8]) -> Result<(), String> {
    walk(Walk {
        r: std::io::Cursor::new(bytes),
        pos: 0,
        len: bytes.len() as u64,
        explicit: true,
    })
}

fn walk<R: Read + Seek>(mut w: Walk<R>) -> Result<(), String> {
    let len = w.len;
    if len < 144 {
        return Ok(()); // the parser says what is wrong with it
    }
    w.skip(128)?;
    if &w.bytes::<4>()? != b"DICM" {
        return Ok(());
    }
    // file meta: explicit VR little endian, group 0002, as long as its group length says
    let (tag, _, gl_len) = w.header(true)?;
    if tag != Tag(0x0002, 0x0000) || gl_len != 4 {
        return Ok(()); // no group length: the parser reads the meta its own way
    }
    let group_length = w.u32()?;
    let meta_end = w.pos + u64::from(group_length);
    if meta_end > len {
        return Err(format!(
            "file meta group length {group_length} overruns the file"
        ));
    }
    let mut ts = String::new();
    while w.pos < meta_end {
        let (tag, _, vlen) = w.header(true)?;
        if tag.group() != 0x0002 {
            return Err(format!(
                "element {tag} inside the file meta group (its group length is wrong)"
            ));
        }
        w.fits(tag, vlen, meta_end)?;
        if tag == Tag(0x0002, 0x0010) && vlen <= 64 {
            let mut b = vec![0u8; vlen as usize];
            w.r.read_exact(&mut b).map_err(|e| e.to_string())?;
            w.pos += u64::from(vlen);
            ts = String::from_utf8_lossy(&b)
                .trim_end_matches(['\0', ' '])
                .to_string();
        } else {
            w.skip(u64::from(vlen))?;
        }
    }
    if w.pos != meta_end {
        return Err("file meta elements overrun its group length".into());
    }
    w.explicit = match ts.as_str() {
        IMPLICIT_LE => false,
        EXPLICIT_BE | DEFLATED => return Ok(()),
        // explicit VR little endian and every encapsulated (compressed) syntax
        _ => true,
    };
    w.dataset(len, false, true, 0)
}
