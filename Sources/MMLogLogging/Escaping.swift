/// Escaping that keeps an event on one line, in every format.
///
/// Swift strings are valid UTF-8 (invalid input was already replaced by U+FFFD when the string
/// was made), so escaping works on bytes and never splits a scalar. Escaped, in JSON's syntax
/// (which logfmt's quoted values share):
/// - `"` as `\"` (JSON strings and quoted logfmt values only; text leaves it) and `\` as `\\`;
/// - C0 controls (U+0000-U+001F) as `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`, and DEL as `\u007f`;
/// - C1 controls (U+0080-U+009F, among them NEL U+0085), LINE SEPARATOR U+2028 and PARAGRAPH
///   SEPARATOR U+2029 as `\u0085`, `\u2028`, `\u2029`: readers that split lines by Unicode's
///   rules (Python's `splitlines`, JavaScript) would otherwise break the line there.
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
        let scalar: UInt32
        switch width {
        case 1: scalar = UInt32(p[i])
        case 2: scalar = UInt32(p[i] & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F)
        default: scalar = UInt32(p[i] & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F)
        }
        switch scalar {
        case 0x22: append("\\\"")
        case 0x5C: append("\\\\")
        case 0x0A: append("\\n")
        case 0x0D: append("\\r")
        case 0x09: append("\\t")
        case 0x08: append("\\b")
        case 0x0C: append("\\f")
        default:
            append("\\u")
            for shift in stride(from: 12, through: 0, by: -4) {
                append(hexDigit(UInt8(truncatingIfNeeded: scalar >> UInt32(shift)) & 0xF))
            }
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
/// control character, `\`, DEL, a C1 control, U+2028 or U+2029); 0 when none does. A `"` is
/// reported as 1: callers that do not quote skip it before asking.
@inline(__always)
func escapedWidth(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> Int {
    let byte = p[i]
    if byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "\"") { return 1 }
    if byte == 0xC2, i + 1 < n, p[i + 1] >= 0x80, p[i + 1] <= 0x9F { return 2 }
    if byte == 0xE2, i + 2 < n, p[i + 1] == 0x80, p[i + 2] == 0xA8 || p[i + 2] == 0xA9 { return 3 }
    return 0
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

extension LineBuffer {
    /// A logfmt (or text) value: bare when it can be, else quoted and escaped.
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

    /// A key of a logfmt or text line: logfmt keys cannot be quoted, so every byte that could
    /// end or confuse the key (space and other controls, `=`, `"`, DEL) and every C1 control,
    /// U+2028 or U+2029 becomes `_`. An empty key is written `_`.
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
