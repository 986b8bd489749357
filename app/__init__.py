"""The Gradio playground (UI only; all logic lives in the easytune library)."""
