//! Just enough of the BPF Type Format to find a struct member's offset in the running kernel's
//! BTF (/sys/kernel/btf/vmlinux).
//!
//! Why by hand: Rust BPF programs cannot carry CO-RE relocations yet, and aya's BTF types keep
//! member offsets private. The kernel programs read a field at an offset user space looks up here and passes in as a read-only global, which keeps them correct
//! on any kernel whose BTF has the field, and lets user space say so when it has not.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed ({0}); is /sys/kernel/btf/vmlinux a BTF blob?")]
    Malformed(&'static str),
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// Bytes that follow the fixed 12-byte header of a type of `kind` with `vlen` entries.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
        3 => 12,                   // ARRAY
        4 | 5 => 12 * vlen,        // STRUCT, UNION
        6 => 8 * vlen,             // ENUM
        13 => 8 * vlen,            // FUNC_PROTO
        15 => 12 * vlen,           // DATASEC
        19 => 12 * vlen,           // ENUM64
        2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        _ => return None,
    })
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = data
        .get(at..at + 4)
        .ok_or(BtfError::Malformed("truncated"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn name_at(strings: &[u8], offset: u32) -> &[u8] {
    let start = offset as usize;
    let rest = strings.get(start..).unwrap_or_default();
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    &rest[..end]
}

/// Byte offset of `member` in `struct name`, `Ok(None)` when the struct or member does not exist
/// or is a bitfield (not addressable by byte).
pub fn member_offset(data: &[u8], name: &str, member: &str) -> Result<Option<u64>, BtfError> {
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
        return Err(BtfError::Malformed(
            "bad magic (only little-endian BTF is supported)",
        ));
    }
    let header_len = u32_at(data, 4)? as usize;
    let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
    let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
    let types = data
        .get(header_len + type_off..header_len + type_off + type_len)
        .ok_or(BtfError::Malformed("type section out of bounds"))?;
    let strings = data
        .get(header_len + str_off..header_len + str_off + str_len)
        .ok_or(BtfError::Malformed("string section out of bounds"))?;
    let mut at = 0;
    while at + 12 <= types.len() {
        let name_off = u32_at(types, at)?;
        let info = u32_at(types, at + 4)?;
        let (kind, vlen, kind_flag) = (
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
        );
        let extra = extra_len(kind, vlen).ok_or(BtfError::Malformed("unknown type kind"))?;
        if kind == KIND_STRUCT && name_at(strings, name_off) == name.as_bytes() {
            for m in 0..vlen {
                let base = at + 12 + m * 12;
                if name_at(strings, u32_at(types, base)?) != member.as_bytes() {
                    continue;
                }
                let raw = u32_at(types, base + 8)?;
                // With kind_flag the low 24 bits are the bit offset and the high 8 the bitfield size.
                let (bits, bitfield) = if kind_flag {
                    (raw & 0x00ff_ffff, raw >> 24 != 0)
                } else {
                    (raw, false)
                };
                return Ok((!bitfield && bits % 8 == 0).then_some(u64::from(bits / 8)));
            }
            return Ok(None);
        }
        at += 12 + extra;
    }
    Ok(None)
}

/// The running kernel's BTF blob.
pub fn kernel_btf() -> Result<Vec<u8>, BtfError> {
    const PATH: &str = "/sys/kernel/btf/vmlinux";
    std::fs::read(PATH).map_err(|source| BtfError::Read { path: PATH, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct s { int a; int b; }` and an INT type.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0".to_vec();
        let mut types = Vec::new();
        let push = |types: &mut Vec<u8>, v: u32| types.extend_from_slice(&v.to_le_bytes());
        // [1] INT "int" size 4, encoding word
        push(&mut types, 1);
        push(&mut types, 1 << 24);
        push(&mut types, 4);
        push(&mut types, 32);
        // [2] STRUCT "s" size 8, two members
        push(&mut types, 5);
        push(&mut types, (4 << 24) | 2);
        push(&mut types, 8);
        for (name, bits) in [(7u32, 0u32), (9, 32)] {
            push(&mut types, name);
            push(&mut types, 1);
            push(&mut types, bits);
        }
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_members() {
        let data = blob();
        assert_eq!(member_offset(&data, "s", "a").ok().flatten(), Some(0));
        assert_eq!(member_offset(&data, "s", "b").ok().flatten(), Some(4));
        assert_eq!(member_offset(&data, "s", "c").ok().flatten(), None);
        assert_eq!(member_offset(&data, "t", "a").ok().flatten(), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(member_offset(b"not btf at all, not at all", "s", "a").is_err());
        let mut truncated = blob();
        truncated.truncate(30);
        assert!(member_offset(&truncated, "s", "a").is_err());
    }

    /// The running kernel's BTF parses to the end and has task_struct::pid (every kernel does).
    #[test]
    fn running_kernel() {
        let btf = kernel_btf().expect("kernel BTF is readable");
        let offset = member_offset(&btf, "task_struct", "pid").expect("kernel BTF parses");
        assert!(offset.is_some_and(|o| o > 0));
    }
}
