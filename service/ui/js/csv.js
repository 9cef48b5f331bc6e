// The little CSV reading the browser does: a header row (to offer the label column) and numeric rows.

/** Split one CSV line into fields (double quotes may wrap a field; "" is a quote inside one). */
export function splitLine(line) {
  const fields = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
      } else {
        field += ch;
      }
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === ",") {
      fields.push(field.trim());
      field = "";
    } else {
      field += ch;
    }
  }
  fields.push(field.trim());
  return fields;
}

/** The header fields of a CSV file, read from its first 64 KiB. */
export async function readHeader(file) {
  const text = await file.slice(0, 65536).text();
  const line = text.replace(/^\uFEFF/, "").split(/\r?\n/, 1)[0] || "";
  return line ? splitLine(line) : [];
}

/** Rows of numbers from pasted text or a CSV: blank lines and a non-numeric first line (a header) skipped. */
export function parseRows(text) {
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line);
  const rows = [];
  lines.forEach((line, index) => {
    const fields = splitLine(line.replace(/[;\t]/g, ","));
    const numbers = fields.map((field) => (field === "" ? NaN : Number(field)));
    if (numbers.every((value) => Number.isFinite(value))) {
      rows.push(numbers);
    } else if (index > 0 || rows.length) {
      const bad = fields.find((field, i) => !Number.isFinite(numbers[i]));
      throw new Error(`line ${index + 1}: ${JSON.stringify(bad)} is not a number`);
    }
  });
  return rows;
}
