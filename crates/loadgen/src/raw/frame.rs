//! The WebSocket framing the raw baseline needs (RFC 6455 §5) and no more: server frames are
//! encoded whole (header and payload in one buffer, unmasked, FIN set), so a message is encoded
//! once and its bytes written as they are to every socket; client frames are parsed from a
//! buffer, checked and unmasked in place. No extension is negotiated, so RSV bits are errors.

use hyper::body::{Buf as _, Bytes};

/// The largest client frame payload (and fragmented message) read; a larger one closes the
/// socket with 1009 as soon as its header says so, before any of it is buffered.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// A server frame header's largest size (8-byte length, no mask).
const MAX_HEADER: usize = 10;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes (RFC 6455 §7.4.1) the socket sends for a broken frame.
pub const PROTOCOL_ERROR: u16 = 1002;
pub const UNSUPPORTED_DATA: u16 = 1003;
pub const INVALID_PAYLOAD: u16 = 1007;
pub const TOO_BIG: u16 = 1009;

/// One complete client frame, its payload unmasked in the buffer it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Where the payload lies in the buffer.
    pub payload: std::ops::Range<usize>,
    /// Bytes the frame took from the buffer, header included.
    pub len: usize,
}

/// Parses the client frame at the start of `buf`: `Ok(None)` until it is complete, `Err(code)`
/// (the close code to answer with) for a frame no client may send or one over [`MAX_PAYLOAD`].
pub fn parse(buf: &mut [u8]) -> Result<Option<Frame>, u16> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
        // RSV bits without an extension, or an unmasked client frame (§5.1).
        return Err(PROTOCOL_ERROR);
    }
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(PROTOCOL_ERROR);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(ext) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([ext[0], ext[1]]) as u64;
            if len < 126 {
                return Err(PROTOCOL_ERROR); // not the minimal encoding (§5.2)
            }
            (len, 4)
        }
        127 => {
            let Some(ext) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut bytes = [0; 8];
            bytes.copy_from_slice(ext);
            let len = u64::from_be_bytes(bytes);
            if len >> 63 != 0 || len <= 0xFFFF {
                return Err(PROTOCOL_ERROR);
            }
            (len, 10)
        }
        len => (u64::from(len), 2),
    };
    if opcode & 0x8 != 0 && (!fin || len > 125) {
        return Err(PROTOCOL_ERROR); // control frames are whole and short (§5.5)
    }
    if len > MAX_PAYLOAD as u64 {
        return Err(TOO_BIG);
    }
    let len = len as usize;
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    at += 4;
    let Some(payload) = buf.get_mut(at..at + len) else {
        return Ok(None);
    };
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload: at..at + len,
        len: at + len,
    }))
}

/// A whole server frame (FIN, unmasked) with this opcode and payload.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    encode_with(opcode, |buf| buf.extend_from_slice(payload))
}

/// A whole server frame whose payload `write` appends to the buffer it is given: the header
/// is put in front afterwards, so the frame costs one allocation and no copy.
pub fn encode_with(opcode: u8, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.resize(MAX_HEADER, 0);
    write(&mut buf);
    let len = buf.len() - MAX_HEADER;
    let mut header = [0u8; MAX_HEADER];
    header[0] = 0x80 | opcode;
    let header_len = if len < 126 {
        header[1] = len as u8;
        2
    } else if len <= 0xFFFF {
        header[1] = 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    let start = MAX_HEADER - header_len;
    buf[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
    let mut frame = Bytes::from(buf);
    frame.advance(start);
    frame
}

/// A close frame's payload: the code and a reason (at most 123 bytes, so the frame is valid).
pub fn close(code: u16, reason: &str) -> Bytes {
    let reason = &reason[..reason.floor_char_boundary(123)];
    encode_with(OP_CLOSE, |buf| {
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(reason.as_bytes());
    })
}

/// Checks a received close frame's payload (§5.5.1, §7.4): empty, or a code a peer may send
/// followed by UTF-8. Returns the code to echo (None for an empty payload), or the close code
/// for a malformed one.
pub fn check_close(payload: &[u8]) -> Result<Option<u16>, u16> {
    match payload {
        [] => Ok(None),
        [_] => Err(PROTOCOL_ERROR),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let sendable = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !sendable {
                return Err(PROTOCOL_ERROR);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(INVALID_PAYLOAD);
            }
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a client would send it: masked with `mask`.
    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn a_masked_text_frame_is_unmasked_in_place() {
        let mut buf = client_frame(0x81, br#"{"type":"ping"}"#, [1, 2, 3, 4]);
        buf.extend_from_slice(b"next");
        let frame = parse(&mut buf).unwrap().unwrap();
        assert!(frame.fin);
        assert_eq!(frame.opcode, OP_TEXT);
        assert_eq!(&buf[frame.payload.clone()], br#"{"type":"ping"}"#);
        assert_eq!(
            frame.len,
            buf.len() - 4,
            "the bytes after the frame are not its own"
        );
    }

    #[test]
    fn every_length_encoding_is_read() {
        for n in [0, 125, 126, 1000, 0xFFFF, 0x1_0000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut buf = client_frame(0x82, &payload, [9, 8, 7, 6]);
            let frame = parse(&mut buf).unwrap().unwrap();
            assert_eq!(&buf[frame.payload.clone()], &payload[..], "length {n}");
            assert_eq!(frame.len, buf.len());
        }
    }

    #[test]
    fn an_incomplete_frame_waits_at_every_cut() {
        let whole = client_frame(0x81, &[b'x'; 300], [5, 6, 7, 8]);
        for cut in 0..whole.len() {
            assert_eq!(parse(&mut whole[..cut].to_vec()), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_header_alone() {
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(MAX_PAYLOAD as u64 + 1).to_be_bytes());
        assert_eq!(parse(&mut header), Err(TOO_BIG));
        let mut at_limit = vec![0x81, 0x80 | 127];
        at_limit.extend_from_slice(&(MAX_PAYLOAD as u64).to_be_bytes());
        assert_eq!(
            parse(&mut at_limit),
            Ok(None),
            "the limit itself is allowed"
        );
    }

    #[test]
    fn frames_no_client_may_send_are_protocol_errors() {
        let cases: [(&str, Vec<u8>); 7] = [
            ("unmasked", vec![0x81, 0x01, b'x']),
            ("an RSV bit", client_frame(0xC1, b"x", [1, 1, 1, 1])),
            ("a reserved opcode", client_frame(0x83, b"x", [1, 1, 1, 1])),
            ("a fragmented ping", client_frame(0x09, b"x", [1, 1, 1, 1])),
            ("a long ping", client_frame(0x89, &[0; 126], [1, 1, 1, 1])),
            ("a short length in 16 bits", {
                let mut f = vec![0x81, 0x80 | 126, 0, 5];
                f.extend_from_slice(&[0; 9]);
                f
            }),
            ("a length with the top bit", {
                let mut f = vec![0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
                f.extend_from_slice(&[0; 4]);
                f
            }),
        ];
        for (what, mut frame) in cases {
            assert_eq!(parse(&mut frame), Err(PROTOCOL_ERROR), "{what}");
        }
    }

    #[test]
    fn server_frames_have_the_shortest_header() {
        for (n, header) in [
            (0, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (0xFFFF, vec![0x81, 126, 0xFF, 0xFF]),
            (0x1_0000, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let payload = vec![b'a'; n];
            let frame = encode(OP_TEXT, &payload);
            assert_eq!(&frame[..header.len()], &header[..], "length {n}");
            assert_eq!(&frame[header.len()..], &payload[..]);
        }
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(check_close(&[]), Ok(None));
        assert_eq!(check_close(&[0x03]), Err(PROTOCOL_ERROR));
        assert_eq!(check_close(&1000u16.to_be_bytes()), Ok(Some(1000)));
        assert_eq!(check_close(&4400u16.to_be_bytes()), Ok(Some(4400)));
        for reserved in [999u16, 1005, 1006, 1015, 2999, 5000] {
            assert_eq!(
                check_close(&reserved.to_be_bytes()),
                Err(PROTOCOL_ERROR),
                "{reserved}"
            );
        }
        assert_eq!(check_close(&[0x03, 0xE8, 0xFF]), Err(INVALID_PAYLOAD));
        let frame = close(4500, "lagged behind");
        assert_eq!(&frame[..4], &[0x88, 15, 0x11, 0x94]);
        assert_eq!(&frame[4..], b"lagged behind");
    }
}
