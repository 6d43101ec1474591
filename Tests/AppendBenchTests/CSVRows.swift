/// A CSV file appendbench wrote, read by column name (RFC 4180 quoting).
struct CSVRows {
    let header: [String]
    let rows: [[String: String]]

    init(_ text: String) {
        var records = Self.parse(text)
        let header = records.isEmpty ? [] : records.removeFirst()
        self.header = header
        rows = records.map { fields in
            Dictionary(zip(header, fields), uniquingKeysWith: { first, _ in first })
        }
    }

    /// The rows of one backend, in file order.
    func backend(_ key: String) -> [[String: String]] {
        rows.filter { $0["backend"] == key }
    }

    private static func parse(_ text: String) -> [[String]] {
        var records: [[String]] = []
        var fields: [String] = []
        var field = ""
        var quoted = false
        var characters = Array(text)[...]
        while let c = characters.popFirst() {
            if quoted {
                if c == "\"" {
                    if characters.first == "\"" { field.append("\""); characters.removeFirst() } else { quoted = false }
                } else {
                    field.append(c)
                }
            } else if c == "\"" {
                quoted = true
            } else if c == "," {
                fields.append(field)
                field = ""
            } else if c == "\n" {
                fields.append(field)
                records.append(fields)
                fields = []
                field = ""
            } else {
                field.append(c)
            }
        }
        if !field.isEmpty || !fields.isEmpty { fields.append(field); records.append(fields) }
        return records
    }
}
