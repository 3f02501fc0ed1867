"""The Todo feature: a built-in list, note-to-task matching, and Home Assistant to-do lists."""
