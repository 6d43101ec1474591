#if canImport(Glibc)
import Glibc
#endif

/// Escaping that keeps an event on one line, in every format, and shows what it holds.
///
/// Swift strings are valid UTF-8 (invalid input was already replaced by U+FFFD when the string
/// was made), so escaping works on bytes and never splits a scalar. Escaped, in JSON's syntax
/// (which logfmt's and text's quoted values share):
/// - `"` as `\"` (JSON strings and quoted values only; a bare text message leaves it) and `\` as `\\`;
/// - C0 controls (U+0000-U+001F) as `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`, and DEL as `\u007f`;
/// - C1 controls (U+0080-U+009F, among them NEL U+0085), LINE SEPARATOR U+2028 and PARAGRAPH
///   SEPARATOR U+2029 as `\u0085`, `\u2028`, `\u2029`: readers that split lines by Unicode's
///   rules (Python's `splitlines`, JavaScript) would otherwise break the line there;
/// - format controls (general category Cf: bidi controls such as U+202E and U+2066-U+2069,
///   zero-width characters such as U+200B, U+FEFF, the soft hyphen, tags) as `\u202e`, or as a
///   surrogate pair (`\udb40\udc01`) above U+FFFF: shown raw, they reorder or hide what a
///   reader sees, so a value could pass for other fields on a terminal or in a web view.
/// Everything else, including other non-ASCII text, is copied as it is.
extension LineBuffer {
    /// Appends `text` escaped; `quotes` also escapes `"` (inside a JSON string or logfmt quotes).
    mutating func appendEscaped(_ text: String, quotes: Bool) {
        withUTF8(of: text) { appendEscaped($0, quotes: quotes) }
    }

    mutating func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>, quotes: Bool) {
        guard let p = bytes.baseAddress else { return }
        let n = bytes.count
        var i = 0, run = 0
        while i < n {
            if !mayNeedEscaping(word(p, at: i, count: n), quotes: quotes) {
                i &+= 8
                continue
            }
            let byte = p[i]
            if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") && (byte != UInt8(ascii: "\"") || !quotes) {
                i &+= 1
                continue
            }
            let width = escapedWidth(p, i, n)
            if width == 0 {
                i &+= 1
                continue
            }
            append(UnsafeBufferPointer(start: p + run, count: i - run))
            appendEscape(p, i, width)
            i &+= width
            run = i
        }
        append(UnsafeBufferPointer(start: p + run, count: n - run))
    }

    private mutating func appendEscape(_ p: UnsafePointer<UInt8>, _ i: Int, _ width: Int) {
        let scalar = decodeScalar(p, i, width)
        switch scalar {
        case 0x22: append("\\\"")
        case 0x5C: append("\\\\")
        case 0x0A: append("\\n")
        case 0x0D: append("\\r")
        case 0x09: append("\\t")
        case 0x08: append("\\b")
        case 0x0C: append("\\f")
        case 0x10000...:
            let offset = scalar - 0x10000  // JSON's \u escapes are UTF-16: a surrogate pair
            appendUnicodeEscape(0xD800 | offset >> 10)
            appendUnicodeEscape(0xDC00 | offset & 0x3FF)
        default:
            appendUnicodeEscape(scalar)
        }
    }

    private mutating func appendUnicodeEscape(_ unit: UInt32) {
        append("\\u")
        for shift in stride(from: 12, through: 0, by: -4) {
            append(hexDigit(UInt8(truncatingIfNeeded: unit >> UInt32(shift)) & 0xF))
        }
    }
}

/// The 8 bytes at `p + i`, or the fewer left before `count` followed by `A`s (bytes that
/// need no escaping), so that short strings and tails are checked a word at a time too.
@inline(__always)
func word(_ p: UnsafePointer<UInt8>, at i: Int, count: Int) -> UInt64 {
    if i &+ 8 <= count { return UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self) }
    var padded: UInt64 = 0x4141_4141_4141_4141
    withUnsafeMutableBytes(of: &padded) { $0.baseAddress!.copyMemory(from: p + i, byteCount: count &- i) }
    return padded
}

/// Whether any of 8 bytes is a control character, DEL, `\\`, non-ASCII or (with `quotes`)
/// `"`: eight plain ASCII bytes are copied without looking at each (bit tricks from "Bit
/// Twiddling Hacks", `haszero` and `hasless`; exact for "any", which is all that is asked).
@inline(__always)
func mayNeedEscaping(_ word: UInt64, quotes: Bool) -> Bool {
    var flags = (word | (word &- 0x2020_2020_2020_2020)) & 0x8080_8080_8080_8080  // >= 0x80 or < 0x20
    flags |= hasByte(word, 0x5C) | hasByte(word, 0x7F)
    if quotes { flags |= hasByte(word, 0x22) }
    return flags != 0
}

/// Nonzero when one of the 8 bytes of `word` equals `byte`.
@inline(__always)
func hasByte(_ word: UInt64, _ byte: UInt8) -> UInt64 {
    let x = word ^ (0x0101_0101_0101_0101 &* UInt64(byte))
    return (x &- 0x0101_0101_0101_0101) & ~x & 0x8080_8080_8080_8080
}

@inline(__always)
private func hexDigit(_ nibble: UInt8) -> UInt8 {
    nibble < 10 ? nibble &+ 0x30 : nibble &+ 0x57
}

/// How many bytes at `p[i]` form a character that must be escaped even without quotes (a
/// control character, `\`, DEL, a C1 control, U+2028, U+2029 or a format control); 0 when
/// none does. A `"` is reported as 1: callers that do not quote skip it before asking.
@inline(__always)
func escapedWidth(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> Int {
    let byte = p[i]
    if byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "\"") { return 1 }
    if byte == 0xC2, i + 1 < n, p[i + 1] >= 0x80, p[i + 1] <= 0x9F { return 2 }
    if byte == 0xE2, i + 2 < n, p[i + 1] == 0x80, p[i + 2] == 0xA8 || p[i + 2] == 0xA9 { return 3 }
    guard mayStartFormatControl(byte) else { return 0 }
    let width = byte < 0xE0 ? 2 : byte < 0xF0 ? 3 : 4
    guard i + width <= n, isFormatControl(decodeScalar(p, i, width)) else { return 0 }
    return width
}

/// The scalar whose `width` bytes of UTF-8 start at `p[i]` (valid UTF-8: a Swift string's).
@inline(__always)
func decodeScalar(_ p: UnsafePointer<UInt8>, _ i: Int, _ width: Int) -> UInt32 {
    switch width {
    case 1: return UInt32(p[i])
    case 2: return UInt32(p[i] & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F)
    case 3: return UInt32(p[i] & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F)
    default: return UInt32(p[i] & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6 | UInt32(p[i + 3] & 0x3F)
    }
}

/// Whether `byte` is the first byte of the UTF-8 of some format control (below): other text
/// (CJK, most emoji, accents) is passed over without decoding it.
@inline(__always)
func mayStartFormatControl(_ byte: UInt8) -> Bool {
    switch byte {
    case 0xC2, 0xD8, 0xDB, 0xDC, 0xE0, 0xE1, 0xE2, 0xEF, 0xF0, 0xF3: return true
    default: return false
    }
}

/// Unicode's format controls, general category Cf (a test checks this list against the
/// standard library's `generalCategory`, and `mayStartFormatControl` against this list).
func isFormatControl(_ scalar: UInt32) -> Bool {
    switch scalar {
    case 0x00AD, 0x0600...0x0605, 0x061C, 0x06DD, 0x070F, 0x0890...0x0891, 0x08E2, 0x180E,
         0x200B...0x200F, 0x202A...0x202E, 0x2060...0x2064, 0x2066...0x206F, 0xFEFF, 0xFFF9...0xFFFB,
         0x110BD, 0x110CD, 0x13430...0x1343F, 0x1BCA0...0x1BCA3, 0x1D173...0x1D17A, 0xE0001, 0xE0020...0xE007F:
        return true
    default:
        return false
    }
}

/// Whether a logfmt value must be quoted: it is empty, or holds a space, `=`, `"`, `\`, or
/// anything `appendEscaped` would escape. Unquoted values are therefore runs of bytes that any
/// logfmt parser takes literally.
func logfmtNeedsQuotes(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    guard let p = bytes.baseAddress, bytes.count > 0 else { return true }
    var i = 0
    while i < bytes.count {
        let bytes8 = word(p, at: i, count: bytes.count)
        if !mayNeedEscaping(bytes8, quotes: true) && hasByte(bytes8, 0x20) | hasByte(bytes8, 0x3D) == 0 {
            i &+= 8
            continue
        }
        let byte = p[i]
        i &+= 1
        if byte <= 0x20 || byte == UInt8(ascii: "=") { return true }
        if byte < 0x7F && byte != UInt8(ascii: "\\") && byte != UInt8(ascii: "\"") { continue }
        if escapedWidth(p, i &- 1, bytes.count) > 0 { return true }
    }
    return false
}

/// See `appendTextMessage`.
func textMessageNeedsQuotes(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    guard let p = bytes.baseAddress, bytes.count > 0 else { return true }
    if p[0] == UInt8(ascii: "\"") { return true }
    let firstWord = memchr(p, 0x20, bytes.count).map { UnsafeRawPointer(p).distance(to: UnsafeRawPointer($0)) } ?? bytes.count
    return memchr(p, Int32(UInt8(ascii: "=")), firstWord) != nil
}

extension LineBuffer {
    /// A logfmt or text value: bare when it can be, else quoted and escaped.
    mutating func appendLogfmtValue(_ text: String) {
        withUTF8(of: text) { appendLogfmtValue($0) }
    }

    mutating func appendLogfmtValue(_ bytes: UnsafeBufferPointer<UInt8>) {
        if logfmtNeedsQuotes(bytes) {
            append(UInt8(ascii: "\""))
            appendEscaped(bytes, quotes: true)
            append(UInt8(ascii: "\""))
        } else {
            append(bytes)
        }
    }

    /// The message, last on a text line: bare (escaped, `"` left as it is), so that it reads as
    /// written, unless it could be taken for something else: it is quoted when it is empty,
    /// starts with `"`, or holds `=` in its first word (up to the first space), which would
    /// read as one more pair.
    mutating func appendTextMessage(_ text: String) {
        withUTF8(of: text) { bytes in
            if textMessageNeedsQuotes(bytes) {
                appendLogfmtValue(bytes)
            } else {
                appendEscaped(bytes, quotes: false)
            }
        }
    }

    /// A key of a logfmt or text line: logfmt keys cannot be quoted, so every byte that could
    /// end or confuse the key (space and other controls, `=`, `"`, DEL) and every C1 control,
    /// U+2028, U+2029 or format control becomes `_`. An empty key is written `_`.
    mutating func appendLogfmtKey(_ text: String) {
        withUTF8(of: text) { bytes in
            guard let p = bytes.baseAddress, bytes.count > 0 else { return append(UInt8(ascii: "_")) }
            var i = 0, run = 0
            while i < bytes.count {
                let byte = p[i]
                let width: Int
                if byte <= 0x20 || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "\"") || byte == 0x7F {
                    width = 1
                } else if byte >= 0x80 {
                    width = escapedWidth(p, i, bytes.count)
                } else {
                    width = 0
                }
                if width == 0 {
                    i += 1
                    continue
                }
                append(UnsafeBufferPointer(start: p + run, count: i - run))
                append(UInt8(ascii: "_"))
                i += width
                run = i
            }
            append(UnsafeBufferPointer(start: p + run, count: bytes.count - run))
        }
    }
}
