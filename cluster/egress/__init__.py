"""The one outbound policy: which addresses flows may reach, checked at connect time."""
