"""The review app's stylesheet: a compact page, a one-line item header, a dense chat with
monospace code and tables, and the word diff. Our own CSS only; nothing from a client."""

from __future__ import annotations

import streamlit as st

MONO = '"Source Code Pro", ui-monospace, SFMono-Regular, Menlo, Consolas, monospace'
CSS = f"""
[data-testid="stHeader"] {{ height: 2.5rem; min-height: 2.5rem; }}
[data-testid="stMainBlockContainer"] {{ padding: 2.9rem 2rem 2rem; }}
[data-testid="stMainBlockContainer"] h1 {{ font-size: 1.5rem; padding: 0 0 .2rem 0; }}
[data-testid="stMain"] [data-testid="stVerticalBlock"] {{ gap: .45rem; }}
[data-testid="stMain"] [data-baseweb="tab-panel"] {{ padding-top: .45rem; }}
[data-testid="stMain"] [data-testid="stForm"] {{ padding: .55rem .8rem; }}
.tl-head {{ display: flex; flex-wrap: wrap; align-items: baseline; gap: .1rem .6rem;
  font-size: .8rem; line-height: 1.45; }}
.tl-head .tl-k {{ color: #6b7280; margin-right: .25rem; }}
.tl-head .tl-v {{ overflow-wrap: anywhere; }}
.tl-ok {{ color: #137333; }}
.tl-bad {{ background: #fde8e8; color: #a50e0e; border-radius: .3rem; padding: 0 .35rem;
  font-weight: 600; }}
.tl-tag {{ background: #e8eefc; border-radius: .6rem; padding: 0 .45rem; margin-right: .2rem; }}
.tl-id {{ font-family: {MONO}; font-size: .68rem; color: #6b7280; user-select: all;
  cursor: copy; }}
.tl-error {{ color: #a50e0e; font-size: .8rem; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; max-width: 100%; }}
.tl-chat {{ display: flex; flex-direction: column; gap: .35rem; }}
.tl-msg {{ border-left: 3px solid #c4c8d0; border-radius: .3rem; padding: .15rem .7rem .25rem;
  background: #f8f9fb; }}
.tl-msg.tl-user {{ border-color: #4a7bd0; }}
.tl-msg.tl-assistant {{ border-color: #2e9e5b; background: #f2faf5; }}
.tl-msg.tl-tool, .tl-msg.tl-function {{ border-color: #b07d2a; background: #fcf8f0; }}
.tl-role {{ font-size: .7rem; text-transform: uppercase; letter-spacing: .05em;
  color: #6b7280; }}
.tl-note {{ font-size: .8rem; color: #6b7280; font-style: italic; }}
.tl-body, .tl-diff, .tl-plain {{ overflow-wrap: break-word; word-break: normal;
  hyphens: manual; }}
.tl-body p {{ margin: .15rem 0 .35rem; }}
.tl-body ul, .tl-body ol {{ margin: .1rem 0 .35rem; padding-inline-start: 1.4rem; }}
.tl-body pre, .tl-code {{ font-family: {MONO}; font-size: .8rem; white-space: pre;
  overflow-x: auto; background: #eef0f4; padding: .4rem .6rem; border-radius: .3rem;
  margin: .25rem 0 .4rem; direction: ltr; text-align: left; }}
.tl-body code {{ font-family: {MONO}; font-size: .86em; }}
.tl-body table {{ font-family: {MONO}; font-size: .8rem; border-collapse: collapse;
  display: block; overflow-x: auto; margin: .25rem 0 .4rem; }}
.tl-body th, .tl-body td {{ border: 1px solid #d5d9e0; padding: .1rem .45rem;
  text-align: start; }}
.tl-plain, .tl-diff {{ white-space: pre-wrap; }}
.tl-long > .tl-body {{ max-height: 15em; overflow: hidden;
  -webkit-mask-image: linear-gradient(to bottom, #000 70%, transparent);
  mask-image: linear-gradient(to bottom, #000 70%, transparent); }}
.tl-long:has(> details[open]) > .tl-body {{ max-height: none; -webkit-mask-image: none;
  mask-image: none; }}
.tl-more summary {{ cursor: pointer; font-size: .8rem; color: #3b6bc4; list-style: none; }}
.tl-more[open] .tl-all, .tl-more:not([open]) .tl-less {{ display: none; }}
.tl-call {{ font-size: .8rem; color: #6b7280; }}
.tl-fold > summary {{ list-style: none; cursor: pointer; display: flex; gap: .5rem;
  align-items: baseline; white-space: nowrap; overflow: hidden; }}
.tl-fold > summary::-webkit-details-marker {{ display: none; }}
.tl-fold > summary .tl-role::before {{ content: "▸ "; }}
.tl-fold[open] > summary .tl-role::before {{ content: "▾ "; }}
.tl-gist {{ flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis;
  font-size: .86rem; color: #374151; }}
.tl-fold[open] .tl-gist {{ display: none; }}
.tl-json {{ max-height: 13em; overflow: auto; }}
.tl-diff {{ font-size: .88rem; border: 1px solid #e3e6eb; border-radius: .3rem;
  padding: .3rem .6rem; max-height: 14em; overflow-y: auto; }}
.tl-diff ins {{ background: #ccf2d6; text-decoration: none; }}
.tl-diff del {{ background: #fbd5d5; text-decoration: line-through; }}
[class*="-canned-reasons"] {{ row-gap: 0 !important; column-gap: .9rem !important; }}
[class*="-canned-reasons"] button {{ min-height: 1.6rem; padding: 0; }}
[class*="-canned-reasons"] button p {{ font-size: .85rem; }}
[class*="-canned-reasons"] button kbd {{ display: none; }}
textarea[aria-label="Answer"] {{ font-family: {MONO}; font-size: .84rem; }}
textarea {{ unicode-bidi: plaintext; text-align: start; }}
"""


def inject_styles() -> None:
    """The stylesheet, in an element that takes no space on the page."""
    st.html(f"<style>{CSS}</style>")
