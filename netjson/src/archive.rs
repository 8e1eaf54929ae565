//! Files → the configuration archive (tar.gz) and its checksum.
//!
//! The device (openwisp-config) downloads the archive only when the checksum changed, so the
//! archive must be a pure function of its files: mtime 0 everywhere, uid/gid 0, empty owner
//! names, entries in the order given. The layout is byte for byte what Python's `tarfile` (ustar
//! headers, 10 KiB records) and `gzip` (mtime 0, level 9) write for netjsonconfig's `generate()`,
//! so a config renders to the same checksum under OpenWISP and fleetmq.

use std::io::Write;

use flate2::{Compression, GzBuilder};
use md5::{Digest, Md5};

use crate::File;

const BLOCK: usize = 512;
const RECORD: usize = 20 * BLOCK;

/// A gzip-compressed tar of `files`, deterministic for the same files in the same order.
pub fn archive(files: &[File]) -> Vec<u8> {
    let mut tar = Vec::new();
    for file in files {
        let contents = file.contents.as_bytes();
        if file.path.len() > 100 {
            // Python's tarfile (PAX format) records long names in an extended header.
            let record = pax_record("path", &file.path);
            let pax_name = "././@PaxHeader";
            tar.extend_from_slice(&header(pax_name, 0o644, record.len(), b'x'));
            push_padded(&mut tar, record.as_bytes());
            tar.extend_from_slice(&header(
                &truncate(&file.path, 100),
                file.mode,
                contents.len(),
                b'0',
            ));
        } else {
            tar.extend_from_slice(&header(&file.path, file.mode, contents.len(), b'0'));
        }
        push_padded(&mut tar, contents);
    }
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    let padded = tar.len().div_ceil(RECORD) * RECORD;
    tar.resize(padded, 0);

    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail.
    gz.write_all(&tar).expect("in-memory gzip");
    gz.finish().expect("in-memory gzip")
}

/// The checksum OpenWISP serves for an archive: lowercase hex MD5 of its bytes.
pub fn checksum(archive: &[u8]) -> String {
    Md5::digest(archive)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A pax record: "<len> <key>=<value>\n", where len counts the whole record.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    loop {
        let candidate = format!("{len}{body}");
        if candidate.len() == len {
            return candidate;
        }
        len = candidate.len();
    }
}

fn push_padded(tar: &mut Vec<u8>, data: &[u8]) {
    tar.extend_from_slice(data);
    let rest = data.len() % BLOCK;
    if rest != 0 {
        tar.resize(tar.len() + BLOCK - rest, 0);
    }
}

/// Octal number field: zero-padded to `width - 1` digits, then NUL.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    let digits = digits.as_bytes();
    let start = digits.len().saturating_sub(width);
    field[..width].copy_from_slice(&digits[start..]);
    field[width] = 0;
}

/// A ustar header as Python's tarfile writes it for a regular file owned by uid 0.
fn header(name: &str, mode: u32, size: usize, kind: u8) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let name = name.as_bytes();
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], u64::from(mode & 0o7777));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size as u64);
    octal(&mut h[136..148], 0); // mtime
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar\x0000");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let chk = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(chk.as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, contents: &str) -> File {
        File {
            path: path.into(),
            mode: 0o644,
            contents: contents.into(),
        }
    }

    #[test]
    fn the_same_files_give_the_same_archive_and_checksum() {
        let files = vec![file("etc/config/system", "config system 'system'\n")];
        let a = archive(&files);
        let b = archive(&files);
        assert_eq!(a, b);
        assert_eq!(checksum(&a).len(), 32);
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff]);
    }

    #[test]
    fn changing_a_file_changes_the_checksum() {
        let a = archive(&[file("etc/x", "a")]);
        let b = archive(&[file("etc/x", "b")]);
        assert_ne!(checksum(&a), checksum(&b));
    }

    #[test]
    fn checksum_is_lowercase_hex_md5() {
        assert_eq!(checksum(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
