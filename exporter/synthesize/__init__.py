"""`tuneloop synthesize`: a first dataset from documents, the way the founding article made one.

For each chunk of each document, one request asks for N questions the chunk answers and one
request per question asks for a 1-2 sentence answer taken from the chunk. Every request goes
through the proxy as `synthetic` traffic with tags, so it is logged like any interaction;
each answer then gets a first revision by reviewer `synthesize` whose messages are just the
question and the answer, and waits in the review queue as pending.

- `loader`: documents from a folder, a glob or a JSONL file (Markdown, text, HTML);
- `chunking`: headings, then paragraphs, to fit a token budget;
- `templates`: the two prompts; `parse`: question lists and answers as models write them;
- `keys`: tags and the hashes that make a run resumable;
- `calls`: one model call through the proxy, with retry and backoff;
- `state`: what earlier runs left in the proxy's log (resumability);
- `runner`: the whole run, with bounded concurrency, progress and a summary.
"""
