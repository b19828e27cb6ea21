"""One cog per feature, each an extension loaded by the bot's setup_hook."""
