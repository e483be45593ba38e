"""FAISS binary indexes over fghash codes files. Never imports torch."""
