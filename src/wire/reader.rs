//! A cursor over variable-length message bytes (the DHT messages of 12.2 and the DHT_LOOKUP
//! payloads of 12.6), for formats whose fields follow each other rather than sit at fixed
//! offsets. Every read is checked: short input is [`ReadError::Truncated`], never a panic, and
//! [`Reader::end`] refuses trailing bytes.

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Fewer bytes left than the field needs.
    #[error("truncated")]
    Truncated,
    /// Bytes left after the last field.
    #[error("trailing bytes")]
    Trailing,
}

/// Reads big-endian fields off the front of a byte slice.
pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { b: bytes }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let (head, rest) = self.b.split_at_checked(n).ok_or(ReadError::Truncated)?;
        self.b = rest;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        self.take(N)?.try_into().map_err(|_| ReadError::Truncated)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, ReadError> {
        let [x] = self.array::<1>()?;
        Ok(x)
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, ReadError> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_be_bytes(self.array::<4>()?))
    }

    /// Succeeds only if every byte was read.
    pub fn end(&self) -> Result<(), ReadError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(ReadError::Trailing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_refuses_short_or_trailing_input() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, 3, 9, 9]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.end(), Err(ReadError::Trailing));
        assert_eq!(r.array::<3>(), Err(ReadError::Truncated));
        assert_eq!(r.take(2), Ok(&[9u8, 9][..]));
        assert_eq!(r.end(), Ok(()));
        assert_eq!(r.u8(), Err(ReadError::Truncated));
    }
}
