"""Entry point of the ``verl.plugins`` group: importing it registers r1kit in verl."""

from r1kit.integrations.verl import register

register()
