// Text from outside (remote file names, cell values in messages) on its way to a terminal, a log
// line, `status` or the remote log: control characters (ANSI escape sequences, line breaks) are
// shown as escapes, never sent raw.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

export function printable(s: string): string {
  return s.replace(CONTROL, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

/** One line, whatever it holds: for a mail subject or a log line. */
export const oneLine = (s: string): string => printable(s.replace(/[\r\n\t]+/g, ' '));
