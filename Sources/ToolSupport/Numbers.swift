/// `value` with exactly `decimals` digits after the point (no Foundation needed).
public func fixed(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = scaled / scale
    let integer = UInt64(whole.rounded(.down))
    var text = (value < 0 && scaled > 0 ? "-" : "") + "\(integer)"
    if decimals > 0 {
        let fraction = UInt64(scaled - Double(integer) * scale)
        let digits = String(fraction)
        text += "." + String(repeating: "0", count: decimals - digits.count) + digits
    }
    return text
}
