/** Which internal snapshot `convert -l` / `measure -l` reads. */
export interface SnapshotSelector {
  /** Must match the snapshot's id (when given). */
  id?: string;
  /** Must match the snapshot's name (when given). */
  name?: string;
  /** A plain `-l NAME`: matches an id first, then a name. */
  idOrName?: string;
}

/** Result of {@link parseSnapshotParam}: the selector, or qemu-img's error, and its warnings. */
export interface ParsedSnapshotParam {
  selector: SnapshotSelector;
  /** Lines qemu-img prints before going on (or failing); each is `{ text, prefixed }`. */
  warnings: { text: string; prefixed: boolean }[];
  /** qemu-img's error message (two lines) when the parameter is invalid. */
  error?: string;
}

const PREFIX = 'snapshot.';

/**
 * Parse qemu-img's `-l` argument: `snapshot.id=ID[,snapshot.name=NAME]` (QemuOpts syntax,
 * `,,` escapes a comma) or a plain id-or-name. Unknown keys give `error` with qemu-img's
 * two-line message; warnings come first, as qemu-img prints them while parsing.
 *
 * @example
 * ```ts
 * parseSnapshotParam('snapshot.name=base').selector; // { name: 'base' }
 * parseSnapshotParam('base').selector;               // { idOrName: 'base' }
 * ```
 */
export function parseSnapshotParam(text: string): ParsedSnapshotParam {
  if (!text.startsWith(PREFIX)) return { selector: { idOrName: text }, warnings: [] };
  const selector: SnapshotSelector = {};
  const warnings: ParsedSnapshotParam['warnings'] = [];
  for (const item of splitOpts(text)) {
    const eq = item.indexOf('=');
    let key = eq < 0 ? item : item.slice(0, eq);
    let value = eq < 0 ? 'on' : item.slice(eq + 1);
    if (eq < 0) {
      // QemuOpts: "key" alone means key=on ("nokey" would mean off), with a deprecation warning.
      if (key.startsWith('no') && key !== 'snapshot.id' && key !== 'snapshot.name') {
        key = key.slice(2);
        value = 'off';
      }
      warnings.push({ text: `warning: short-form boolean option '${item}' deprecated`, prefixed: true }, { text: `Please use ${key}=${value} instead`, prefixed: false });
    }
    if (key === 'snapshot.id') selector.id = value;
    else if (key === 'snapshot.name') selector.name = value;
    else return { selector, warnings, error: `Invalid parameter '${key}'\nFailed in parsing snapshot param '${text}'` };
  }
  return { selector, warnings };
}

/** Split on single commas; ",," is a literal comma. */
function splitOpts(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === ',') {
      if (text[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out.filter((s) => s !== '');
}

/** The string to look a snapshot up with (id first, then name), for APIs taking one string. */
export function snapshotLookupKey(s: SnapshotSelector): string {
  return s.idOrName ?? s.id ?? s.name ?? '';
}

/** True when `entry` satisfies every constraint of `s` (the lookup key alone may be looser). */
export function snapshotMatches(s: SnapshotSelector, entry: { id: string; name: string }): boolean {
  if (s.idOrName !== undefined) return entry.id === s.idOrName || entry.name === s.idOrName;
  return (s.id === undefined || entry.id === s.id) && (s.name === undefined || entry.name === s.name);
}
