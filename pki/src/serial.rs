//! Certificate serial numbers as OpenWISP shows them: a decimal string.
//!
//! django-x509 stores `serial_number` as a `CharField(max_length=48)` holding a decimal integer
//! and generates it with `uuid.uuid4().int` (a 128-bit number of which 122 bits are random). A
//! user may also type one ("leave blank to determine automatically"); it must be an integer.
//! Imported certificates keep theirs (up to 20 octets by RFC 5280, which is larger than `u128`),
//! so the number is kept as big-endian bytes and converted to and from decimal here.

use std::fmt;

use crate::PkiError;

/// A certificate serial number (a non-negative integer of any size up to 48 decimal digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerialNumber(Vec<u8>);

impl SerialNumber {
    /// A fresh serial number the way django-x509 makes one (`uuid.uuid4().int`), so numbers
    /// from both systems look alike and collide with negligible probability.
    pub fn random() -> SerialNumber {
        let mut bytes = [0u8; 16];
        // aws-lc's system RNG only fails if the OS has no entropy source at all.
        aws_lc_rs::rand::fill(&mut bytes).expect("the operating system random source works");
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // UUID version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        SerialNumber::from_be_bytes(&bytes)
    }

    /// Parses the decimal string of the API (`"serial_number"`).
    pub fn parse(decimal: &str) -> Result<SerialNumber, PkiError> {
        let decimal = decimal.trim();
        let invalid = || PkiError::invalid("serial_number", "Serial number must be an integer.");
        if decimal.is_empty() || !decimal.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        if decimal.len() > 48 {
            return Err(PkiError::invalid(
                "serial_number",
                "Serial number must have at most 48 digits.",
            ));
        }
        let mut bytes: Vec<u8> = Vec::new();
        for digit in decimal.bytes().map(|b| b - b'0') {
            let mut carry = u32::from(digit);
            for byte in bytes.iter_mut().rev() {
                let value = u32::from(*byte) * 10 + carry;
                *byte = (value & 0xff) as u8;
                carry = value >> 8;
            }
            while carry > 0 {
                bytes.insert(0, (carry & 0xff) as u8);
                carry >>= 8;
            }
        }
        Ok(SerialNumber::from_be_bytes(&bytes))
    }

    /// The number from its big-endian magnitude (as in a certificate, leading zeros allowed).
    pub fn from_be_bytes(bytes: &[u8]) -> SerialNumber {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        SerialNumber(bytes[first..].to_vec())
    }

    /// The big-endian magnitude without leading zeros (empty for zero).
    pub fn to_be_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn to_rcgen(&self) -> rcgen::SerialNumber {
        if self.0.is_empty() {
            rcgen::SerialNumber::from_slice(&[0])
        } else {
            rcgen::SerialNumber::from_slice(&self.0)
        }
    }
}

impl fmt::Display for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("0");
        }
        let mut number = self.0.clone();
        let mut digits = Vec::new();
        while !number.is_empty() {
            let mut remainder = 0u32;
            for byte in number.iter_mut() {
                let value = (remainder << 8) | u32::from(*byte);
                *byte = (value / 10) as u8;
                remainder = value % 10;
            }
            digits.push(b'0' + remainder as u8);
            let first = number.iter().position(|b| *b != 0).unwrap_or(number.len());
            number.drain(..first);
        }
        digits.reverse();
        f.write_str(&String::from_utf8_lossy(&digits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trips_beyond_u128() {
        for text in [
            "0",
            "1",
            "255",
            "256",
            "340282366920938463463374607431768211456",
        ] {
            assert_eq!(SerialNumber::parse(text).unwrap().to_string(), text);
        }
        let big = u128::MAX;
        assert_eq!(
            SerialNumber::from_be_bytes(&big.to_be_bytes()).to_string(),
            big.to_string()
        );
    }

    #[test]
    fn random_serials_are_uuid4_integers() {
        let serial = SerialNumber::random();
        let value = serial.to_string().parse::<u128>().unwrap();
        assert_eq!((value >> 76) & 0xf, 4, "version nibble");
        assert_eq!((value >> 62) & 0x3, 2, "variant bits");
        assert_ne!(serial, SerialNumber::random());
    }

    #[test]
    fn non_integers_are_refused() {
        for text in ["", "12a", "-1", "1.5"] {
            assert!(matches!(
                SerialNumber::parse(text),
                Err(PkiError::Invalid {
                    field: "serial_number",
                    ..
                })
            ));
        }
    }
}
