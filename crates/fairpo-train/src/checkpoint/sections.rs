//! A tiny single-file container for checkpoints: named binary sections behind a magic
//! header, so a checkpoint (trainer state + model record + optimizer record) is one
//! file that can be written atomically with one rename.
//!
//! Layout: `FAIRPOCK` magic, u32 LE format version, u32 LE section count, then per
//! section: u32 LE name length, name bytes (UTF-8), u64 LE payload length, payload.

use std::collections::BTreeMap;

const MAGIC: &[u8; 8] = b"FAIRPOCK";
const VERSION: u32 = 1;

/// Why a container could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ContainerError {
    /// The bytes do not start with the checkpoint magic.
    #[error("not a fairpo checkpoint (bad magic)")]
    BadMagic,
    /// A newer/unknown format version.
    #[error("unsupported checkpoint format version {0} (this build reads {VERSION})")]
    Version(u32),
    /// The file ends in the middle of a section.
    #[error("checkpoint is truncated (corrupt or half-written)")]
    Truncated,
    /// A section name is not UTF-8.
    #[error("checkpoint has a section name that is not UTF-8")]
    BadName,
    /// A required section is absent.
    #[error("checkpoint has no `{0}` section")]
    Missing(String),
}

/// Named binary sections.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SectionFile {
    sections: BTreeMap<String, Vec<u8>>,
}

impl SectionFile {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a section.
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        self.sections.insert(name.to_string(), bytes);
    }

    /// A section's bytes.
    pub fn get(&self, name: &str) -> Result<&[u8], ContainerError> {
        self.sections
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| ContainerError::Missing(name.to_string()))
    }

    /// Takes a section out.
    pub fn take(&mut self, name: &str) -> Result<Vec<u8>, ContainerError> {
        self.sections
            .remove(name)
            .ok_or_else(|| ContainerError::Missing(name.to_string()))
    }

    /// Serialises the container.
    pub fn encode(&self) -> Vec<u8> {
        let total: usize = self
            .sections
            .iter()
            .map(|(k, v)| k.len() + v.len() + 12)
            .sum();
        let mut out = Vec::with_capacity(16 + total);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for (name, bytes) in &self.sections {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Parses bytes written by [`SectionFile::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ContainerError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(ContainerError::BadMagic);
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(ContainerError::Version(version));
        }
        let count = r.u32()?;
        let mut sections = BTreeMap::new();
        for _ in 0..count {
            let n = r.u32()? as usize;
            let name = std::str::from_utf8(r.take(n)?)
                .map_err(|_| ContainerError::BadName)?
                .to_string();
            let len = usize::try_from(r.u64()?).map_err(|_| ContainerError::Truncated)?;
            sections.insert(name, r.take(len)?.to_vec());
        }
        if r.pos != bytes.len() {
            return Err(ContainerError::Truncated);
        }
        Ok(Self { sections })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ContainerError> {
        let end = self.pos.checked_add(n).ok_or(ContainerError::Truncated)?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(ContainerError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, ContainerError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ContainerError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut c = SectionFile::new();
        c.insert("state", b"{\"epoch\":3}".to_vec());
        c.insert("model", vec![1, 2, 3, 4, 5]);
        c.insert("empty", vec![]);
        let bytes = c.encode();
        let back = SectionFile::decode(&bytes).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.get("model").unwrap(), &[1, 2, 3, 4, 5]);
        assert_eq!(
            back.get("nope"),
            Err(ContainerError::Missing("nope".into()))
        );
        assert_eq!(
            SectionFile::decode(&bytes[..bytes.len() - 1]),
            Err(ContainerError::Truncated)
        );
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(SectionFile::decode(&extra), Err(ContainerError::Truncated));
        assert_eq!(
            SectionFile::decode(b"PK\x03\x04xxxxxxxxxxxx"),
            Err(ContainerError::BadMagic)
        );
    }
}
