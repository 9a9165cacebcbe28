"""What the review app asks of the reviewer's browser, through one tiny trusted component
(Streamlit components v2, our own JavaScript, no data from a client or a model in its code):

- `?` (outside an input) opens a sheet of the keys;
- set or clear the sign-in cookie (`SameSite=Strict`, `Secure` over https);
- on a new item: scroll to the top and take focus out of any input, so the hotkeys work;
- one action per item shown: after an action key (A X N J U, Ctrl+Enter, Enter in the
  reason box) the next ones are dropped until the page has drawn the outcome (`page_ready`),
  and for a moment after a new item appears (a double press never acts on an unseen item);
  Enter in the Item page's id box leaves the box at once;
- keep the reviewer's typed answer in `localStorage` while they type (keyed by reviewer and
  item, with the time), hand it back after a reload, and forget it once it is saved, when the
  reviewer signs out, or after `DRAFT_MAX_AGE_S` (customer text must not linger in a browser).

Model text never goes through this component: drafts are written into the DOM's textarea
value by the browser itself and come back to Python as component state (plain strings).
"""

from __future__ import annotations

import secrets
from typing import Any

import streamlit as st

_JS = """
export default function(component) {
  const { data, setStateValue } = component;
  if (!data) { return; }
  const w = window;
  w.__tuneloop = w.__tuneloop || { done: {} };
  const once = (what, token) => {
    if (!token || w.__tuneloop.done[what] === token) { return false; }
    w.__tuneloop.done[what] = token; return true;
  };
  if (data.cookie && once('cookie:' + data.cookie.name, data.cookie.token)) {
    const secure = location.protocol === 'https:' ? '; Secure' : '';
    const value = encodeURIComponent(data.cookie.value || '');
    document.cookie = data.cookie.name + '=' + value + '; Path=/; Max-Age=' +
      data.cookie.max_age + '; SameSite=Strict' + secure;
  }
  const lock = w.__tuneloop.lock = w.__tuneloop.lock || { until: 0, settle: 0, shown: null };
  if (!w.__tuneloop.keyLock) {
    // One action per item shown: an action key lets the next ones wait until the page says
    // it is ready again (page_ready, sent after the whole item pane), plus a short moment
    // when that is a new item. Registered on window in the capture phase: it runs before
    // Streamlit's shortcuts (document) and the text areas' Ctrl+Enter (React's root).
    w.__tuneloop.keyLock = true;
    w.addEventListener('keydown', (event) => {
      const el = event.target;
      const typing = el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT']
        .includes(el.tagName));
      const plain = !event.ctrlKey && !event.metaKey && !event.altKey;
      const key = event.key;
      const submit = (event.ctrlKey || event.metaKey) && key === 'Enter';
      const act = submit || (plain && !typing && /^[axnjuAXNJU]$/.test(key))
        || (plain && key === 'Enter' && el && el.tagName === 'INPUT'
            && el.getAttribute('aria-label') === w.__tuneloop.reasonLabel);
      if (!act) { return; }
      const now = performance.now();
      // Ctrl+Enter comes from the editor the reviewer is typing in: only a busy page stops it
      if (event.repeat || now < lock.until || (!submit && now < lock.settle)) {
        event.preventDefault(); event.stopImmediatePropagation(); return;
      }
      lock.until = now + 1500;  // until the page answers (or this long, if it never does)
    }, true);
  }
  if (data.ready) {
    w.__tuneloop.reasonLabel = data.reason_label;
    const switched = lock.shown !== null && lock.shown !== data.ready.item;
    lock.shown = data.ready.item;
    lock.until = 0;
    if (switched) { lock.settle = performance.now() + data.ready.settle_ms; }
  }
  if (data.top && once('top', data.top)) {
    const active = document.activeElement;
    if (active && active !== document.body && active.blur) { active.blur(); }
    const scrollers = [document.scrollingElement,
      ...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"],'
        + ' [data-testid="stAppScrollToBottomContainer"], section.main, .stMain')];
    for (const el of scrollers) { if (el) { el.scrollTop = 0; } }
    w.scrollTo(0, 0);
  }
  if (data.focus && once('focus', data.focus.token)) {
    const target = document.querySelector('[aria-label="' + data.focus.label + '"]');
    if (target) { target.focus(); target.scrollIntoView({ block: 'center' }); }
  }
  if (data.blur_on_enter) {
    w.__tuneloop.blurLabels = data.blur_on_enter;
    if (!w.__tuneloop.blurring) {
      w.__tuneloop.blurring = true;
      document.addEventListener('keyup', (event) => {
        const el = event.target;
        if (event.key !== 'Enter' || !el || el.tagName !== 'INPUT') { return; }
        if (w.__tuneloop.blurLabels.includes(el.getAttribute('aria-label'))) { el.blur(); }
      }, true);
    }
  }
  if (data.keys) {
    w.__tuneloop.keys = data.keys;
    if (!w.__tuneloop.keySheet) {
      w.__tuneloop.keySheet = true;
      document.addEventListener('keydown', (event) => {
        const el = event.target;
        const typing = el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT']
          .includes(el.tagName));
        const open = document.getElementById('tuneloop-keys');
        if (event.key === 'Escape' && open) { open.remove(); return; }
        if (event.key !== '?' || typing) { return; }
        if (open) { open.remove(); return; }
        const sheet = document.createElement('div');
        sheet.id = 'tuneloop-keys';
        sheet.setAttribute('role', 'dialog');
        sheet.setAttribute('aria-label', 'Keys');
        sheet.style.cssText = 'position:fixed;top:15%;left:50%;transform:translateX(-50%);' +
          'z-index:100000;background:#fff;color:#111;border:1px solid #888;' +
          'border-radius:8px;padding:16px 24px;box-shadow:0 8px 32px rgba(0,0,0,.3);' +
          'font:14px/1.7 sans-serif';
        const title = document.createElement('b');
        title.textContent = 'Keys (? or Esc to close)';
        sheet.appendChild(title);
        for (const [key, does] of w.__tuneloop.keys) {
          const row = document.createElement('div');
          const k = document.createElement('kbd');
          k.textContent = key;
          k.style.cssText = 'display:inline-block;min-width:7.5em;font-family:monospace';
          row.appendChild(k);
          row.appendChild(document.createTextNode(does));
          sheet.appendChild(row);
        }
        sheet.addEventListener('click', () => sheet.remove());
        document.body.appendChild(sheet);
      }, true);
    }
  }
  const drafts = w.__tuneloop.drafts = w.__tuneloop.drafts || {};
  const readDraft = (key) => {
    let raw = null;
    try { raw = localStorage.getItem(key); } catch (e) { return null; }
    if (raw === null) { return null; }
    try {
      const kept = JSON.parse(raw);
      if (kept && typeof kept.t === 'string' && typeof kept.at === 'number') { return kept; }
    } catch (e) {}
    return { t: raw, at: 0 };  // an older plain draft: no time, so it counts as expired
  };
  const dropDrafts = (prefix, olderThan) => {
    try {
      const keys = [];
      for (let i = 0; i < localStorage.length; i++) { keys.push(localStorage.key(i)); }
      for (const key of keys) {
        if (!key || !key.startsWith(prefix)) { continue; }
        if (olderThan === null || (readDraft(key) || { at: 0 }).at < olderThan) {
          localStorage.removeItem(key);
        }
      }
    } catch (e) {}
  };
  if (data.draft_forget) {
    for (const key of data.draft_forget) { try { localStorage.removeItem(key); } catch (e) {} }
  }
  if (data.draft_clear && once('clear:' + data.draft_clear.prefix, data.draft_clear.token)) {
    dropDrafts(data.draft_clear.prefix, null);
  }
  if (data.draft) {
    const key = data.draft.key, label = data.draft.label;
    if (!drafts.listening) {
      drafts.listening = true;
      document.addEventListener('input', (event) => {
        const el = event.target;
        const current = w.__tuneloop.drafts.current;
        if (!current || !el || el.tagName !== 'TEXTAREA') { return; }
        if (el.getAttribute('aria-label') !== current.label) { return; }
        try {
          if (el.value === current.original) { localStorage.removeItem(current.key); }
          else {
            localStorage.setItem(current.key, JSON.stringify({ t: el.value, at: Date.now() }));
          }
        } catch (e) {}
      }, true);
    }
    if (data.draft.max_age_ms && !drafts.swept) {  // once a page load: expired drafts go
      drafts.swept = true;
      dropDrafts(data.draft.prefix, Date.now() - data.draft.max_age_ms);
    }
    drafts.current = { key: key, label: label, original: data.draft.original };
    const kept = readDraft(key);
    const saved = kept === null ? null : kept.t;
    if (data.draft.ask && saved !== null && saved !== data.draft.original
        && once('ask:' + key, key)) {
      setStateValue('draft', { key: key, text: saved });
    }
  }
}
"""

_component = st.components.v2.component("tuneloop_browser", js=_JS)


DRAFT_PREFIX = "tuneloop-draft:"
DRAFT_MAX_AGE_S = 24 * 3600


def draft_prefix(reviewer: str) -> str:
    """Where a reviewer's drafts are kept in `localStorage` (one key per item after it)."""
    return f"{DRAFT_PREFIX}{reviewer}:"


def clear_drafts(reviewer: str, token: str) -> None:
    """Forget every draft this browser keeps for `reviewer` (once per `token`)."""
    browser("tuneloop-draft-clear", draft_clear={"prefix": draft_prefix(reviewer),
                                                 "token": token})


def browser(key: str, **data: Any) -> Any:
    """Mount the helper with `data` (see the module docstring); returns its state."""
    return _component(key=key, data=data, height=0, on_draft_change=lambda: None)


def set_cookie(name: str, value: str, max_age_s: int, token: str) -> None:
    browser("tuneloop-cookie", cookie={"name": name, "value": value,
                                       "max_age": max(0, max_age_s), "token": token})


SETTLE_MS = 400


def page_ready(token: str, *, reason_label: str = "") -> None:
    """Call after the whole item pane is drawn: on a new `token` (a new item) scroll to the
    top and take the focus out of inputs; and let the action keys act again (after
    `SETTLE_MS` when the item is new, so a second key press meant for the item before never
    lands on one the reviewer has not seen). `reason_label`: Enter in that box is an action."""
    browser("tuneloop-top", top=token, reason_label=reason_label,
            ready={"item": token, "settle_ms": SETTLE_MS, "run": secrets.token_hex(6)})


def key_sheet(keys: list[tuple[str, str]]) -> None:
    """`?` opens a sheet of these keys (our own words, drawn as text)."""
    browser("tuneloop-keys", keys=[list(k) for k in keys])


def blur_on_enter(*labels: str) -> None:
    """Enter in one of these inputs (e.g. an id box) also leaves it, so the keys act next."""
    browser("tuneloop-blur", blur_on_enter=list(labels))


def focus(label: str, token: str) -> None:
    """Focus the input labelled `label`, once per `token`."""
    browser("tuneloop-focus", focus={"label": label, "token": token})
