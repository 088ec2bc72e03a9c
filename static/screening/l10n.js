// Text, numbers and times in the page's language (<html lang>) and the user's time zone
// (<body data-time-zone>). gettext() and friends come from Django's JavaScript catalog
// (/jsi18n/), loaded by every page before its scripts; without it the English text shows.

export const gettext = window.gettext || ((text) => text);
export const ngettext = window.ngettext || ((one, many, n) => (n === 1 ? one : many));
const interpolate = window.interpolate
  || ((text, values) => text.replace(/%\((\w+)\)s/g, (_, name) => String(values[name])));

// A translated text with named placeholders: t(gettext("Call from %(who)s"), { who }).
export function t(text, values) {
  return values ? interpolate(text, values, true) : text;
}

export const LANG = document.documentElement.lang || "en";
const zone = document.body.dataset.timeZone || undefined;

function dateFormat(options) {
  try {
    return new Intl.DateTimeFormat(LANG, { ...options, timeZone: zone });
  } catch {
    return new Intl.DateTimeFormat(LANG, options); // a zone this browser does not know
  }
}

const hourMinute = dateFormat({ hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const dayMonth = dateFormat({ day: "numeric", month: "short" });
const dayKey = dateFormat({ year: "numeric", month: "2-digit", day: "2-digit" });
const dateTime = dateFormat({ dateStyle: "medium", timeStyle: "short" });
const timeOfDay = dateFormat({ timeStyle: "medium" });
const tenths = new Intl.NumberFormat(LANG, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat(LANG, { maximumFractionDigits: 0 });
export const relative = new Intl.RelativeTimeFormat(LANG, { numeric: "auto" });

// "8.4 s" (English) or "8,4 s" (German): the countdown's seconds.
export function seconds(value) {
  return `${tenths.format(value)} s`;
}

export function integer(value) {
  return whole.format(value);
}

// HH:MM in the user's zone, with the day when it is not today there.
export function clockTime(ms, nowMs) {
  const time = hourMinute.format(ms);
  return dayKey.format(ms) === dayKey.format(nowMs) ? time : `${dayMonth.format(ms)} ${time}`;
}

export function dateAndTime(ms) {
  return dateTime.format(ms);
}

export function timeNow() {
  return timeOfDay.format(Date.now());
}
