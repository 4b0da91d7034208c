//! Who caused a fetch: the requesting process and the file's name, copied into pool so
//! that a waiter can ask again, or start a background fill, long after its operation's
//! own buffers are gone.

use super::*;

/// Text of the asker held in pool: UTF-16 units.
pub(super) struct Units {
    buffer: Option<PoolBuf>,
    len: usize,
}

impl Units {
    pub(super) fn copy(units: &[u16]) -> Option<Self> {
        if units.is_empty() {
            return Some(Self {
                buffer: None,
                len: 0,
            });
        }
        let mut buffer = PoolBuf::zeroed(units.len().checked_mul(2)?)?;
        for (pair, unit) in buffer.as_mut_slice().chunks_exact_mut(2).zip(units) {
            pair.copy_from_slice(&unit.to_le_bytes());
        }
        Some(Self {
            buffer: Some(buffer),
            len: units.len(),
        })
    }

    pub(super) fn get(&self) -> &[u16] {
        let Some(buffer) = &self.buffer else {
            return &[];
        };
        let bytes = buffer.as_slice();
        // SAFETY: pool memory is 16-byte aligned and holds `len` units written by `copy`
        // (little-endian, the targets' byte order).
        unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<u16>(), self.len) }
    }
}

/// Who caused a fetch, for the provider: kept by a waiter, so that whoever settles it
/// can ask again or start a background fill on its behalf.
pub(crate) struct Asker {
    pub(super) pid: u32,
    /// The file's normalized NT path.
    pub(super) name: Units,
    pub(super) image: Units,
    /// Its command line, when the provider asked for process info and it could be
    /// read (`None`: the provider is told `UNKNOWN`).
    pub(super) command_line: Option<Units>,
}

impl Asker {
    /// Copies what the provider is told; `None` when pool is exhausted.
    pub(crate) fn new(
        pid: u32,
        name: &[u16],
        image: &[u16],
        command_line: Option<&[u16]>,
    ) -> Option<Self> {
        let image = image
            .get(..cloudflt_proto::msg::MAX_IMAGE_BYTES / 2)
            .unwrap_or(image);
        let command_line = match command_line {
            Some(units) if !units.is_empty() => Some(Units::copy(units)?),
            _ => None,
        };
        Some(Self {
            pid,
            name: Units::copy(name)?,
            image: Units::copy(image)?,
            command_line,
        })
    }
}
