"""Full-screen terminal apps (Textual) of the CLI; they drive cotgen.app use cases and print nothing themselves."""
