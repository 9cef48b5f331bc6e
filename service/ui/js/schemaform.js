// Form fields from a JSON Schema (the OpenAPI document's JobCreate): kinds, defaults, allowed values, bounds.

import { resolveRef } from "./api.js";
import { el } from "./dom.js";

/** Flatten one property schema: `$ref` resolved, `anyOf [X, null]` -> X with `nullable`. */
export function describe(document_, name, raw) {
  let schema = resolveRef(document_, raw);
  let nullable = false;
  const variants = schema.anyOf || schema.oneOf;
  if (variants) {
    const resolved = variants.map((variant) => resolveRef(document_, variant));
    nullable = resolved.some((variant) => variant.type === "null");
    const value = resolved.find((variant) => variant.type !== "null") || {};
    schema = { ...value, ...schema, anyOf: undefined, oneOf: undefined };
  }
  const choices = schema.enum || (schema.const !== undefined ? [schema.const] : null);
  let kind = "text";
  if (choices) kind = "choice";
  else if (schema.type === "boolean") kind = "boolean";
  else if (schema.type === "integer" || schema.type === "number") kind = schema.type;
  else if (schema.type === "array") kind = "list";
  const items = schema.type === "array" ? resolveRef(document_, schema.items || {}) : null;
  return {
    name,
    kind,
    nullable,
    choices,
    items,
    default: raw.default !== undefined ? raw.default : schema.default,
    title: schema.title || name,
    description: schema.description || raw.description || "",
    minimum: schema.minimum ?? schema.exclusiveMinimum,
    maximum: schema.maximum ?? schema.exclusiveMaximum,
    exclusiveMinimum: schema.exclusiveMinimum !== undefined,
    exclusiveMaximum: schema.exclusiveMaximum !== undefined,
    pattern: schema.pattern,
    maxLength: schema.maxLength,
  };
}

function bounds(field) {
  const parts = [];
  if (field.minimum !== undefined) parts.push(`${field.exclusiveMinimum ? ">" : "≥"} ${field.minimum}`);
  if (field.maximum !== undefined) parts.push(`${field.exclusiveMaximum ? "<" : "≤"} ${field.maximum}`);
  return parts.join(", ");
}

function hintText(field) {
  const parts = [];
  if (field.description) parts.push(field.description.replace(/`/g, "").replace(/\.$/, ""));
  if (field.kind === "list") parts.push("comma-separated integers");
  if (field.default !== undefined && field.default !== null) {
    parts.push(`default ${Array.isArray(field.default) ? field.default.join(", ") : field.default}`);
  } else if (field.nullable) {
    parts.push("empty: none");
  }
  const range = bounds(field.kind === "list" ? { ...field, ...describeItems(field) } : field);
  if (range) parts.push(range);
  return parts.join("; ");
}

function describeItems(field) {
  const items = field.items || {};
  return {
    minimum: items.minimum ?? items.exclusiveMinimum,
    maximum: items.maximum ?? items.exclusiveMaximum,
    exclusiveMinimum: items.exclusiveMinimum !== undefined,
    exclusiveMaximum: items.exclusiveMaximum !== undefined,
  };
}

/** The input element of a field, showing its default. */
function control(field, id, describedBy) {
  const common = { id, name: field.name, "aria-describedby": describedBy, dataset: { field: field.name } };
  if (field.kind === "choice") {
    return el(
      "select",
      common,
      field.nullable ? el("option", { value: "" }, "none") : null,
      field.choices.map((choice) => el("option", { value: String(choice), selected: choice === field.default }, String(choice))),
    );
  }
  if (field.kind === "boolean") return el("input", { ...common, type: "checkbox", checked: field.default === true });
  if (field.kind === "integer" || field.kind === "number") {
    return el("input", {
      ...common,
      type: "number",
      inputmode: field.kind === "integer" ? "numeric" : "decimal",
      step: field.kind === "integer" ? "1" : "any",
      min: field.minimum !== undefined && !field.exclusiveMinimum ? field.minimum : null,
      max: field.maximum !== undefined && !field.exclusiveMaximum ? field.maximum : null,
      value: field.default === null || field.default === undefined ? "" : String(field.default),
    });
  }
  const value = Array.isArray(field.default) ? field.default.join(", ") : field.default ?? "";
  return el("input", {
    ...common,
    type: "text",
    value: String(value),
    pattern: field.kind === "text" && field.pattern ? field.pattern.replace(/^\^|\$$/g, "") : null,
    maxlength: field.maxLength ?? null,
    autocomplete: "off",
  });
}

/** A labelled field: {node, input, error, field}. */
export function fieldNode(field) {
  const id = `field-${field.name}`;
  const hint = el("p", { class: "hint", id: `${id}-hint` }, hintText(field));
  const error = el("p", { class: "field-error", id: `${id}-error`, dataset: { errorFor: field.name } });
  const input = control(field, id, `${id}-hint ${id}-error`);
  const label = el("label", { for: id }, field.title);
  const node =
    field.kind === "boolean"
      ? el("div", { class: "field check" }, input, label, hint, error)
      : el("div", { class: "field" }, label, input, hint, error);
  return { node, input, error, field };
}

function number(text) {
  const value = Number(text);
  return text.trim() !== "" && Number.isFinite(value) ? value : text; // the API names what is wrong with text
}

/** The value to send for a field, or undefined to leave it to the API's default. */
export function fieldValue({ input, field }) {
  if (field.kind === "boolean") return input.checked;
  const text = input.value.trim();
  if (text === "") return field.nullable ? null : undefined;
  if (field.kind === "integer" || field.kind === "number") return number(text);
  if (field.kind === "list") return text.split(/[\s,]+/).filter(Boolean).map(number);
  if (field.kind === "choice") {
    const match = field.choices.find((choice) => String(choice) === text);
    return match === undefined ? text : match;
  }
  return text;
}
