"""The review app's pages: Streamlit runs each file as a script (see curation_ui/app.py). A
package only so that lint-imports checks their imports too; import nothing from here."""
